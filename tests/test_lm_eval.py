"""lm-eval integration on the tiny model: our model, our tasks, lm-eval's own model and CLI.

Everything runs offline: tasks generate their problems locally and the models are local folders.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from decoders.redumix.method import stage_cache  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.lmeval import model as lm_eval_model  # noqa: E402
from harness.lmeval import tasks as lm_eval_tasks  # noqa: E402
from harness.lmeval.model import NO_VERIFIER, RedumixLM, cut_at_stop  # noqa: E402
from harness.runs.runner import RunSpec, run  # noqa: E402
from tests.helpers.lm_eval import evaluate as _evaluate  # noqa: E402
from tests.helpers.lm_eval import local_sums_task  # noqa: E402

MAX_NEW = 12


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    folder = lm_eval_tasks.write_task_dir(tmp_path_factory.mktemp("rg-tasks"))
    return TaskManager(include_path=str(folder), include_defaults=False, metadata={"rg_n": 4})


@pytest.fixture
def jsonl_task(tmp_path):
    return local_sums_task(tmp_path)


def _runner_records(tiny_model_dir, tmp_path, env, decoder="greedy", decoder_config=None, n=4, dtype="auto"):
    out = tmp_path / f"run-{env}-{decoder}"
    run(RunSpec(env=env, decoder=decoder, decoder_config=decoder_config or {}, n=n, seed=0,
                model=str(tiny_model_dir), max_new_tokens=MAX_NEW, batch_size=3, dtype=dtype), out, progress=False)
    return {r["problem_id"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_two_rg_tasks_report_our_metrics_and_match_redumix_run(tiny_model_dir, task_manager, tmp_path):
    res = _evaluate({"model": str(tiny_model_dir)}, ["rg_basic_arithmetic", "rg_chain_sum"], task_manager,
                    apply_chat_template=True, gen_kwargs={"max_gen_toks": MAX_NEW})
    for task, env in (("rg_basic_arithmetic", "basic_arithmetic"), ("rg_chain_sum", "chain_sum")):
        metrics = res["results"][task]
        assert {"acc,none", "score,none", "format_ok,none"} <= set(metrics)
        records = _runner_records(tiny_model_dir, tmp_path, env)
        samples = res["samples"][task]
        assert len(samples) == 4
        for sample in samples:
            record = records[sample["doc"]["problem_id"]]
            assert sample["arguments"][0][0] == record["prompt"]  # the exact text fed to the model
            response = sample["resps"][0][0]
            # lm-eval responses end before the stop string; the runner keeps it.
            restored = response + "</answer>" if record["finish_reason"] == "stop" else response
            assert restored == record["completion"]
            assert sample["acc"] == float(record["correct"]) and sample["score"] == record["score"]
        assert metrics["acc,none"] == sum(r["correct"] for r in records.values()) / 4
    assert res["config"]["redumix"]["decoder"] == "greedy"
    assert res["config"]["redumix"]["model"]["dtype"] in ("bfloat16", "float32")  # the one auto chose, by name


def test_redumix_through_lm_eval_matches_redumix_run(tiny_model_dir, task_manager, tmp_path):
    # Short prompts: the tiny model's tokenizer spends one token per character of a 512-token window.
    config = {"lam": 0.3, "feedback": "ground_truth", "reflection_max_new_tokens": 6,
              "reflect_prompt": "Reflect.", "redo_prompt": "Redo."}
    # float32 on both sides: the mixture statistics are compared to 1e-5, closer than bf16 rounding.
    res = _evaluate({"model": str(tiny_model_dir), "decoder": "redumix", "dtype": "float32", **config},
                    ["rg_basic_arithmetic"], task_manager, apply_chat_template=True,
                    gen_kwargs={"max_gen_toks": MAX_NEW})
    lm = lm_eval_model.latest_model()
    records = _runner_records(tiny_model_dir, tmp_path, "basic_arithmetic", "redumix",
                              {k: str(v) for k, v in config.items()}, dtype="float32")
    for sample in res["samples"]["rg_basic_arithmetic"]:
        record = records[sample["doc"]["problem_id"]]
        response = sample["resps"][0][0]
        assert (response + "</answer>" if record["finish_reason"] == "stop" else response) == record["completion"]
        (telemetry,) = lm.telemetry[("rg_basic_arithmetic", sample["doc_id"])]
        assert telemetry["stage1_completion"] == record["stage1_completion"]
        assert telemetry["feedback"] == record["feedback"] and "The expected answer is" in telemetry["feedback"]
        assert telemetry["feedback_policy"] == "ground_truth"
        assert telemetry["kl_mix_p1"] == pytest.approx(record["kl_mix_p1"], abs=1e-5)
        # One meaning of latency_s everywhere: the final decoding; the stages before it apart.
        assert telemetry["latency_s"] > 0 and telemetry["stage_s"] > 0
        stages = telemetry["stage1_s"] + telemetry["reflection_s"]
        assert telemetry["stage_s"] >= stages - 1e-3  # stages 1-3 sum into stage_s, not into latency_s


def test_redumix_on_a_task_without_environment_gets_no_feedback(tiny_model_dir, jsonl_task):
    _evaluate({"model": str(tiny_model_dir), "decoder": "redumix", "lam": 0.5, "reflection_max_new_tokens": 4,
               "reflect_prompt": "Reflect.", "redo_prompt": "Redo."},
              [jsonl_task], limit=2)
    entries = [e for (task, _), es in lm_eval_model.latest_model().telemetry.items() for e in es]
    assert len(entries) == 2
    for entry in entries:
        assert entry["task"] == "local_sums"
        assert entry["feedback_policy"] == NO_VERIFIER and entry["feedback"] == ""
        assert entry["stage1_correct"] is None


def test_local_generate_task_runs_through_our_model_in_any_batch_size(tiny_model_dir, jsonl_task):
    from harness.engine import lockstep
    from harness.engine.models import load_model
    from harness.engine.prompts import encode

    one = _evaluate({"model": str(tiny_model_dir)}, [jsonl_task], batch_size=1)
    three = _evaluate({"model": str(tiny_model_dir)}, [jsonl_task], batch_size=3)
    assert "exact_match,none" in one["results"]["local_sums"]
    outputs = [s["resps"][0][0] for s in one["samples"]["local_sums"]]
    assert outputs == [s["resps"][0][0] for s in three["samples"]["local_sums"]]
    # The same prompts decoded by the engine directly, cut before the first stop string.
    loaded = load_model(str(tiny_model_dir))
    prompts = [s["arguments"][0][0] for s in one["samples"]["local_sums"]]
    rows = lockstep.decode(loaded, [[encode(loaded.tokenizer, p) for p in prompts]],
                         lm_eval_model.get_decoder("greedy"), max_new_tokens=8, stop_strings=["\n", "Q:"])
    assert outputs == [cut_at_stop(r.text, ["\n", "Q:"]) for r in rows]


def test_builtin_hf_model_still_works_and_agrees_on_loglikelihood(tiny_model_dir, jsonl_task, task_manager):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(tiny_model_dir), "dtype": "float32"},
                                  tasks=[jsonl_task], device="cpu", batch_size=2, bootstrap_iters=0, limit=2)
    assert "exact_match,none" in res["results"]["local_sums"]
    # Our tasks run on lm-eval's own models too.
    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(tiny_model_dir), "dtype": "float32"},
                                  tasks=["rg_gcd"], task_manager=task_manager, device="cpu", batch_size=2,
                                  bootstrap_iters=0, limit=2, gen_kwargs={"max_gen_toks": 6})
    assert {"acc,none", "score,none", "format_ok,none"} <= set(res["results"]["rg_gcd"])

    hf = get_model("hf")(pretrained=str(tiny_model_dir), device="cpu", dtype="float32", batch_size=2)
    ours = RedumixLM(model=str(tiny_model_dir), dtype="float32", batch_size=3)  # as lm-eval's hf model
    pairs = [("Q: 1 + 2 =", " 3"), ("Q: 10 + 20 =", " 30"), ("", "hello"), ("abc ", "def"), ("x", "y" * 40)]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for (lp, greedy), (hf_lp, hf_greedy) in zip(ours.loglikelihood(requests), hf.loglikelihood(requests),
                                                strict=True):
        assert lp == pytest.approx(hf_lp, abs=1e-3) and greedy == hf_greedy
    # Longer than the tiny model's 512-token window: scored in two windows.
    texts = [("The quick brown fox. " * 30,), ("short",)]
    rolling = [Instance("loglikelihood_rolling", {}, t, i) for i, t in enumerate(texts)]
    assert ours.loglikelihood_rolling(rolling) == pytest.approx(hf.loglikelihood_rolling(rolling), abs=1e-2)


def test_redumix_loglikelihood_is_the_mixture_of_both_contexts(tiny_model_dir):
    import torch
    from lm_eval.api.instance import Instance

    from decoders.mixture import mix_logprobs
    from harness.engine.prompts import encode

    pairs = [("Q: 1 + 2 =", " 3"), ("Q: 1 + 2 =", " 4"), ("Q: 5 + 1 =", " 6")]
    requests = [Instance("loglikelihood", {}, pair, i, ("mc", i // 2, 1)) for i, pair in enumerate(pairs)]
    short = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": 4}
    for lam in (0.0, 0.3, 1.0):
        # float32: the batched scores are compared with unbatched forwards to 1e-3, closer than bf16 rounding.
        lm = RedumixLM(model=str(tiny_model_dir), decoder="redumix", lam=lam, dtype="float32", batch_size=2,
                       max_gen_toks=6, **short)
        results = lm.loglikelihood(requests)
        assert len(stage_cache(lm._cache).entries) == 2  # one first attempt per distinct context
        tok = lm.loaded.tokenizer
        for (context, continuation), (logprob, is_greedy) in zip(pairs, results, strict=True):
            (stage,) = [s for s in stage_cache(lm._cache).entries.values() if context in s.x]
            x = encode(tok, stage.x)
            target = encode(tok, stage.x + continuation)[len(x) :]
            rows = []
            for ctx in (x, encode(tok, stage.x2)):  # unbatched forwards of each context + continuation
                with torch.no_grad():
                    logits = lm.loaded.model(torch.tensor([ctx + target])).logits[0].float()
                rows.append(torch.log_softmax(logits, -1)[len(ctx) - 1 : -1])
            mixed = mix_logprobs(torch.stack(rows), (lam, 1 - lam))
            expected = mixed.gather(-1, torch.tensor(target).view(-1, 1)).sum()
            assert logprob == pytest.approx(float(expected), abs=1e-3)
            assert is_greedy == bool((mixed.argmax(-1) == torch.tensor(target)).all())
        assert {e["request_type"] for es in lm.telemetry.values() for e in es} == {"loglikelihood"}
    with pytest.raises(NotImplementedError, match="decoder 'redumix' has no loglikelihood_rolling"):
        lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("some text",), 0)])


def test_redumix_loglikelihood_never_cuts_x2(tiny_model_dir):
    from lm_eval.api.instance import Instance

    from harness.engine.prompts import encode

    short = {"reflect_prompt": "Reflect.", "redo_prompt": "Redo.", "reflection_max_new_tokens": 4}
    probe = RedumixLM(model=str(tiny_model_dir), decoder="redumix", lam=0.5, max_gen_toks=6, **short)
    probe.loglikelihood([Instance("loglikelihood", {}, ("Q: 1 + 2 =", " 3"), 0)])
    (stage,) = stage_cache(probe._cache).entries.values()
    x2_tokens = len(encode(probe.loaded.tokenizer, stage.x2))
    # Room for x2 and max_gen_toks (6) exactly: a 3-token continuation fits, a 10-token one would cut x2.
    tight = RedumixLM(model=str(tiny_model_dir), decoder="redumix", lam=0.5, max_gen_toks=6,
                      max_length=x2_tokens + 6, **short)
    (fits,) = tight.loglikelihood([Instance("loglikelihood", {}, ("Q: 1 + 2 =", " 3"), 0)])
    (same,) = probe.loglikelihood([Instance("loglikelihood", {}, ("Q: 1 + 2 =", " 3"), 0)])
    assert fits[0] == pytest.approx(same[0], abs=1e-4)
    with pytest.raises(ValueError, match=r"x2 \(\d+ tokens\) and the continuation \(10 tokens\) exceed max_length"):
        tight.loglikelihood([Instance("loglikelihood", {}, ("Q: 1 + 2 =", " 123456789"), 0)])


def test_task_overrides_and_gold_answers_score_one(task_manager):
    tm = TaskManager(include_path=task_manager.include_path, include_defaults=False,
                     metadata={"rg_n": 3, "rg_seed": 7, "rg_config": {"chain_sum": {"min_terms": 2, "max_terms": 2}}})
    docs = list(tm.load(["rg_chain_sum"])["tasks"]["rg_chain_sum"].test_docs())
    assert [d["problem_id"] for d in docs] == [f"chain_sum-s7-{i}" for i in range(3)]
    assert all(d["question"].count("+") + d["question"].count("-") == 1 for d in docs)
    for task in ("rg_basic_arithmetic_easy", "rg_gcd", "rg_spell_backward"):
        for doc in tm.load([task])["tasks"][task].test_docs():
            # A response cut before "</answer>" (as lm-eval returns it) still counts.
            assert lm_eval_tasks.process_results(doc, [f"<answer>{doc['gold']}"]) == {
                "acc": 1.0, "score": 1.0, "format_ok": 1.0}
            assert lm_eval_tasks.process_results(doc, ["no answer"])["format_ok"] == 0.0


def test_every_environment_has_a_task_and_rg_easy_groups_the_easy_ones(task_manager):
    from envs import available_envs

    names = set(lm_eval_tasks.available_tasks())
    assert {f"rg_{env}" for env in available_envs()} <= names
    assert names <= set(task_manager.all_tasks)  # every generated YAML is one lm-eval indexes
    loaded = task_manager.load(["rg_easy"])
    assert sorted(loaded["tasks"]) == sorted(f"rg_{env}_easy" for env in lm_eval_tasks.EASY_CONFIGS)


@pytest.mark.parametrize(
    ("model_args", "error", "message"),
    [
        ("decoder=gredy", ValueError, "Unknown decoder 'gredy'. Did you mean: greedy"),
        ("decoder=redumix,lam=0,0.5", ValueError, "model_args item '0.5' is not key=value"),
        ("decoder=redumix,lamda=0.5", ValueError, "Unknown parameter 'lamda' for decoder 'redumix'. Did you mean: lam"),
        ("decoder=redumix,oops", ValueError, "model_args item 'oops' has no value"),
        ("decoder=sample,temperature=0", ValueError, "temperature (=0"),
    ],
)
def test_bad_model_args_give_our_error(tiny_model_dir, jsonl_task, model_args, error, message):
    with pytest.raises(error) as info:
        _evaluate(f"model={tiny_model_dir},{model_args}", [jsonl_task])
    assert message in str(info.value)


def test_self_consistency_runs_through_lm_eval_and_one_sample_is_sample(tiny_model_dir, jsonl_task):
    one = _evaluate({"model": str(tiny_model_dir), "decoder": "self_consistency", "n": 1, "temperature": 1.5},
                    [jsonl_task], batch_size=3)
    sample = _evaluate({"model": str(tiny_model_dir), "decoder": "sample", "temperature": 1.5}, [jsonl_task],
                       batch_size=2)
    assert [s["resps"][0][0] for s in one["samples"]["local_sums"]] == [
        s["resps"][0][0] for s in sample["samples"]["local_sums"]]
    four = _evaluate({"model": str(tiny_model_dir), "decoder": "self_consistency", "n": 4}, [jsonl_task])
    entries = [e for es in lm_eval_model.latest_model().telemetry.values() for e in es]
    assert len(entries) == len(four["samples"]["local_sums"])
    assert all(len(e["sample_completions"]) == 4 and e["sample_correct"] is None for e in entries)


def test_requests_that_ask_to_sample_are_sampled(tiny_model_dir):
    greedy = RedumixLM(model=str(tiny_model_dir))
    chosen = greedy._request_decoder({"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert (chosen.name, chosen.temperature, chosen.top_p) == ("sample", 0.7, 0.9)
    assert greedy._request_decoder({"do_sample": True, "temperature": 0.0}).name == "greedy"
    assert greedy._request_decoder({"do_sample": False, "temperature": 0.7}).name == "greedy"
    redumix = RedumixLM(model=str(tiny_model_dir), decoder="redumix", lam=0.4)
    mixed = redumix._request_decoder({"do_sample": True, "temperature": 0.5})
    assert (mixed.sample, mixed.temperature, mixed.lam) == (True, 0.5, 0.4)
    assert redumix._request_decoder({"do_sample": False}) is redumix.decoder


def test_bad_batch_size_names_the_argument(tiny_model_dir):
    with pytest.raises(ValueError, match=r"batch_size \(='auto'\) must be a positive integer"):
        RedumixLM(model=str(tiny_model_dir), batch_size="auto")


def test_cli_route_writes_results_samples_and_telemetry(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lm-eval"
    code = main(["lm-eval", "run", "--model", "redumix", "--model_args", f"model={tiny_model_dir}",
                 "--tasks", "rg_basic_arithmetic", "--limit", "3", "--batch_size", "2", "--apply_chat_template",
                 "--gen_kwargs", "max_gen_toks=8", "--output_path", str(out), "--log_samples"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rg_basic_arithmetic" in printed and "acc" in printed  # lm-eval's table
    (results,) = out.rglob("results_*.json")
    date = results.stem.removeprefix("results_")
    assert "rg_basic_arithmetic" in json.loads(results.read_text())["results"]
    samples = [json.loads(line) for line in (results.parent / f"samples_rg_basic_arithmetic_{date}.jsonl").open()]
    telemetry = [json.loads(line) for line in (results.parent / f"telemetry_rg_basic_arithmetic_{date}.jsonl").open()]
    assert sorted(s["doc_id"] for s in samples) == sorted(t["doc_id"] for t in telemetry) == [0, 1, 2]
    by_doc = {t["doc_id"]: t for t in telemetry}
    for sample in samples:
        assert by_doc[sample["doc_id"]]["problem_id"] == sample["doc"]["problem_id"]
        assert by_doc[sample["doc_id"]]["new_tokens"] >= 1


def test_cli_unknown_rg_task_gets_did_you_mean(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    code = main(["lm-eval", "run", "--model", "redumix", "--tasks", "rg_basic_arithmetc"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown task 'rg_basic_arithmetc'. Did you mean: rg_basic_arithmetic" in err


def test_cli_runs_our_tasks_beside_a_users_include_path(tiny_model_dir, tmp_path, monkeypatch, jsonl_task):
    import yaml

    monkeypatch.setenv("REDUMIX_CACHE", str(tmp_path / "cache"))
    theirs = tmp_path / "their-tasks"
    theirs.mkdir()
    (theirs / "local_sums.yaml").write_text(yaml.safe_dump(jsonl_task))
    out = tmp_path / "out.json"
    code = main(["lm-eval", "run", "--model", "redumix", "--model_args", f"model={tiny_model_dir}",
                 "--tasks", "local_sums,rg_gcd", "--include_path", str(theirs), "--limit", "2",
                 "--gen_kwargs", "max_gen_toks=4", "--output_path", str(out)])
    assert code == 0
    (results,) = tmp_path.glob("out_*.json")
    assert {"local_sums", "rg_gcd"} <= set(json.loads(results.read_text())["results"])
    date = results.stem.removeprefix("out_")
    assert (tmp_path / f"telemetry_rg_gcd_{date}.jsonl").is_file()
    import lm_eval.tasks

    assert lm_eval.tasks.TaskManager.__name__ == "TaskManager"  # restored after the run


def test_tasks_subcommand_writes_the_yaml_folder(tmp_path, capsys):
    assert main(["lm-eval", "tasks", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "t")
    assert (tmp_path / "t" / "rg_basic_arithmetic.yaml").is_file()
    assert "!function harness.lmeval.tasks.make_dataset" in (tmp_path / "t" / "rg_gcd.yaml").read_text().replace(
        "'", "")


def test_entry_point_names_our_model():
    from importlib.metadata import entry_points

    (point,) = [e for e in entry_points(group="lm_eval.models") if e.name == "redumix"]
    assert point.load() is RedumixLM


def test_sampling_is_seeded_per_problem_like_redumix_run(tiny_model_dir, task_manager, tmp_path):
    res = _evaluate({"model": str(tiny_model_dir), "decoder": "sample", "temperature": 1.5}, ["rg_gcd"],
                    task_manager, apply_chat_template=True, gen_kwargs={"max_gen_toks": MAX_NEW}, batch_size=3)
    records = _runner_records(tiny_model_dir, tmp_path, "gcd", "sample", {"temperature": "1.5"})
    for sample in res["samples"]["rg_gcd"]:
        record = records[sample["doc"]["problem_id"]]
        response = sample["resps"][0][0]
        assert (response + "</answer>" if record["finish_reason"] == "stop" else response) == record["completion"]
        # How it ended travels with the text through lm-eval's filters to the grader.
        assert sample["filtered_resps"][0].ended_on_stop == (record["finish_reason"] == "stop")


def test_a_response_that_ended_inside_an_open_tag_is_not_closed(task_manager):
    import pickle

    doc = next(iter(task_manager.load(["rg_gcd"])["tasks"]["rg_gcd"].test_docs()))
    text = f"<answer>{doc['gold']}"
    assert lm_eval_tasks.process_results(doc, [text])["acc"] == 1.0  # a plain string: taken as cut at "</answer>"
    ended_on_eos = lm_eval_tasks.Response(text, ended_on_stop=False)
    for response in (ended_on_eos, pickle.loads(pickle.dumps(ended_on_eos))):  # lm-eval's cache pickles
        assert response == text
        assert lm_eval_tasks.process_results(doc, [response]) == {"acc": 0.0, "score": 0.0, "format_ok": 0.0}


def test_the_former_module_name_still_registers_the_model():
    import importlib

    from lm_eval.api.registry import get_model

    legacy = importlib.import_module("harness.lm_eval_model")
    assert legacy.RedumixLM is get_model("redumix") is lm_eval_model.RedumixLM
    # task folders written before the move name their functions under the old module
    old_tasks = importlib.import_module("harness.lm_eval_tasks")
    for name in ("make_dataset", "doc_to_text", "process_results"):
        assert getattr(old_tasks, name) is getattr(lm_eval_tasks, name)
