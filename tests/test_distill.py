"""`redumix distill` on the tiny model: the losses, GKD towards the ReDuMix mixture, DPO, LoRA,
resuming, the output folder, and every refusal."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from decoders import get_decoder
from decoders.mixture import mix_logprobs
from harness.cli import main
from harness.distill import DistillOptions, distill
from harness.distill.gkd import answer_logprobs, redumix_mixture
from harness.distill.losses import generalized_jsd, kl_divergence, teacher_cross_entropy
from harness.distill.out_folder import interrupted_message
from harness.distill.sequences import MixtureCollator, gkd_examples
from harness.engine.lockstep import decode
from harness.engine.loglikelihood import continuation_logprobs
from harness.engine.models import load_model
from harness.engine.prompts import encode, render_chat
from harness.runs.store import RunDir
from tests.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["What is 2+3?", "Name a colour.", "Spell cat.", "Count to 3.", "Say hi.", "Add 4 and 5."]
CUE = "Check your answer and try again."
FAST = {"batch_size": 2, "lr": 1e-2, "save_steps": 1000}


def _contexts(tokenizer, question: str) -> tuple[str, str]:
    """x (the question) and x2 (the question, then a reflection cue), rendered as the engine renders them."""
    x = render_chat(tokenizer, [{"role": "user", "content": question}])
    x2 = render_chat(tokenizer, [{"role": "user", "content": question}, {"role": "user", "content": CUE}])
    return x, x2


def _pair(tokenizer, question: str, chosen: str, model: str, lam: float = 0.5) -> dict:
    x, x2 = _contexts(tokenizer, question)
    return {"prompt": x, "reflective_prompt": x2, "chosen": chosen, "rejected": "no idea", "lambda": lam,
            "model": model}


def _write_pairs(path, pairs) -> str:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return str(path)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, tiny_model_dir):
    tokenizer = tiny_model().tokenizer
    pairs = [_pair(tokenizer, q, f"<answer>{i}</answer>", str(tiny_model_dir)) for i, q in enumerate(QUESTIONS)]
    return _write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", pairs)


def _greedy(loaded, prompts, max_new_tokens=8):
    ids = [encode(loaded.tokenizer, p) for p in prompts]
    return decode(loaded, [ids], get_decoder("greedy"), max_new_tokens=max_new_tokens)


def _listing(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- losses ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_equals_trls(beta, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    gkd = pytest.importorskip("trl.experimental.gkd")
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 7, 11, generator=gen) * 2, torch.randn(3, 7, 11, generator=gen) * 2
    labels = torch.randint(0, 11, (3, 7), generator=gen)
    labels[0, :3] = labels[2, 5:] = -100
    theirs = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)
    ours = generalized_jsd(student.log_softmax(-1), teacher.log_softmax(-1), beta, labels != -100)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)


def test_forward_kl_is_the_cross_entropy_under_the_teacher_minus_its_entropy():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 5, 9, generator=gen).log_softmax(-1).requires_grad_(True)
    teacher = torch.randn(2, 5, 9, generator=gen).log_softmax(-1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    entropy = -(teacher.exp() * teacher).sum(-1).mean()
    kl, ce = generalized_jsd(student, teacher, 0.0, mask), teacher_cross_entropy(student, teacher, mask)
    assert torch.allclose(kl, ce - entropy, atol=1e-6)
    (grad_kl,) = torch.autograd.grad(kl, student)
    (grad_ce,) = torch.autograd.grad(ce, student)
    assert torch.allclose(grad_kl, grad_ce)  # the same gradient: beta=0 trains on the seed's loss
    assert kl_divergence(teacher, teacher).abs().max() < 1e-6


def test_masked_tokens_count_for_nothing():
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(1, 4, 5, generator=gen).log_softmax(-1)
    teacher = torch.randn(1, 4, 5, generator=gen).log_softmax(-1)
    mask = torch.tensor([[False, True, True, False]])
    changed = student.clone()
    changed[0, 0] = changed[0, 3] = torch.tensor([0.0, -50, -50, -50, -50])
    for beta in (0.0, 0.3, 1.0):
        same = generalized_jsd(student, teacher, beta, mask), generalized_jsd(changed, teacher, beta, mask)
        assert torch.allclose(*same)
    with pytest.raises(ValueError, match=r"beta \(=1.5\) must be in \[0, 1\]"):
        generalized_jsd(student, teacher, 1.5, mask)


# --- GKD ------------------------------------------------------------------------------------------------------------

def test_the_batch_reads_each_answer_token_where_the_engine_does():
    """Left-padded batches of rows with different context and answer lengths give, at every
    answer position, the log-probs the engine scores continuations with, under x and under x2."""
    loaded = tiny_model()
    tok = loaded.tokenizer
    pairs = [_pair(tok, q, answer, "tiny", lam=lam)
             for q, answer, lam in (("Say hi.", "<answer>7</answer>", 0.3), ("What is 2+3?", "5", 0.8))]
    examples, skipped = gkd_examples(tok, pairs, None, max_length=512)
    assert not skipped and [e.lam for e in examples] == [0.3, 0.8]
    batch = MixtureCollator(tok.pad_token_id)(examples)
    with torch.no_grad():
        under_x = answer_logprobs(loaded.model, batch, "")
        under_x2 = answer_logprobs(loaded.model, batch, "reflective_")
    mixed = redumix_mixture(under_x, under_x2, batch["lam"])
    engine_x = continuation_logprobs(loaded, [(e.x_ids, e.target) for e in examples])
    engine_x2 = continuation_logprobs(loaded, [(e.x2_ids, e.target) for e in examples])
    for row, e in enumerate(examples):
        n = len(e.target)
        assert batch["target_mask"][row].sum() == n and batch["target_mask"][row, -n:].all()
        assert torch.allclose(under_x[row, -n:], engine_x[row], atol=1e-5)
        assert torch.allclose(under_x2[row, -n:], engine_x2[row], atol=1e-5)
        expected = mix_logprobs(torch.stack([engine_x[row], engine_x2[row]]), (e.lam, 1 - e.lam))
        assert torch.allclose(mixed[row, -n:], expected, atol=1e-5)
    assert redumix_mixture(None, under_x2, torch.zeros(2)).allclose(under_x2, atol=1e-6)  # lam 0: x2 alone


@pytest.mark.parametrize("lora", [False, True])
def test_at_lambda_1_the_teacher_is_the_base_under_x_so_training_starts_at_zero_loss(tmp_path, pairs_file, lora):
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(lam=1.0, lora=lora, max_steps=1, **FAST))
    assert summary.first_loss == pytest.approx(0.0, abs=1e-6)


def test_gkd_loss_falls_and_the_folder_loads_and_decodes(tmp_path, pairs_file):
    # One batch of all six pairs per step: the loss is measured on the same tokens every step.
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(max_steps=12, batch_size=6, lr=1e-2))
    assert summary.pairs == 6 and summary.steps == 12 and summary.objective == "gkd"
    assert summary.last_loss < 0.5 * summary.first_loss
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "tokenizer.json", "distill_config.json", "training_log.csv",
            "training_curve.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists() and not list(out.glob(".distill-partial-*"))
    log = (out / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,loss,learning_rate") and "teacher_ce" in log[0] and len(log) == 13
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "distill_config.json").read_text())
    assert config["training"]["objective"] == "gkd" and config["training"]["beta"] == 0.0
    assert config["lambda"] == {"given": None, "pairs_per_value": {"0.5": 6}}
    assert config["source"]["kind"] == "pairs" and config["examples"] == 6
    assert set(config["versions"]) >= {"torch", "transformers", "trl", "peft"}
    assert config["trainer"]["lr_scheduler_type"] == "linear" and config["trainer"]["max_steps"] == 12
    loaded = load_model(str(out))
    rows = _greedy(loaded, [json.loads(line)["prompt"] for line in open(pairs_file)])
    assert len(rows) == 6 and all(r.token_ids for r in rows)


def test_gkd_at_lambda_0_teaches_the_model_under_x_what_it_said_under_x2(tmp_path):
    """The planted pattern: ReDuMix at lambda=0 decodes greedily under x2; distilled, the model
    answers that under x alone, which the base model did not."""
    base = tiny_model(init_std=0.5)
    base.model.save_pretrained(tmp_path / "base")
    base.tokenizer.save_pretrained(tmp_path / "base")
    base = load_model(str(tmp_path / "base"), dtype="float32")  # as the distillation trains and its teacher runs
    contexts = [_contexts(base.tokenizer, q) for q in QUESTIONS]
    redos = [row.text for row in _greedy(base, [x2 for _, x2 in contexts])]
    before = [row.text for row in _greedy(base, [x for x, _ in contexts])]
    assert all(redos) and sum(b == r for b, r in zip(before, redos, strict=True)) == 0
    pairs = [_pair(base.tokenizer, q, redo, str(tmp_path / "base"), lam=0.0) for q, redo in zip(QUESTIONS, redos,
                                                                                                  strict=True)]
    source = _write_pairs(tmp_path / "pairs.jsonl", pairs)
    summary = distill(source, tmp_path / "out", DistillOptions(max_steps=100, batch_size=6, lr=2e-2, save_steps=1000))
    assert summary.last_loss < 0.1
    after = [row.text for row in _greedy(load_model(str(tmp_path / "out"), dtype="float32"), [x for x, _ in contexts])]
    assert sum(a == r for a, r in zip(after, redos, strict=True)) >= 5, (after, redos)


def test_distils_a_redumix_run_folder(tmp_path, tiny_model_dir):
    tokenizer = tiny_model().tokenizer
    run = RunDir(tmp_path / "run")
    run.write_spec({"run": RUN_SPEC})
    run.append(_records(tokenizer, str(tiny_model_dir)))
    summary = distill(run.path, tmp_path / "out", DistillOptions(max_steps=2, batch_size=2, lr=1e-2, save_steps=1,
                                                                 keep_checkpoints=True))
    assert summary.pairs == 1 and summary.base_model == str(tiny_model_dir)  # "improved": one record
    assert [p.name for p in (tmp_path / "out" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    summary = distill(run.path, tmp_path / "out-all", DistillOptions(max_steps=2, rule="all", **FAST))
    assert summary.pairs == 3
    config = json.loads((tmp_path / "out-all" / "distill_config.json").read_text())
    assert config["source"] | {"path": None, "pairs_sha256": None} == {
        "path": None, "kind": "run", "rule": "all", "records": 4, "pairs": 3, "pairs_sha256": None}
    assert config["lambda"]["pairs_per_value"] == {"0": 2, "0.5": 1}


class _InterruptAfterSaving(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class _InterruptAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_an_interrupted_distillation_resumes_to_the_same_weights(tmp_path, pairs_file):
    options = DistillOptions(max_steps=5, batch_size=2, grad_accum=2, lr=1e-2, save_steps=3, seed=7)
    whole = distill(pairs_file, tmp_path / "whole", options)
    with pytest.raises(KeyboardInterrupt):
        distill(pairs_file, tmp_path / "cut", options, callbacks=[_InterruptAfterSaving(3)])
    cut = tmp_path / "cut"
    assert not (cut / "config.json").exists() and (cut / "checkpoints" / "checkpoint-3").is_dir()
    assert "the checkpoint of step 3 is kept" in interrupted_message(cut)
    with pytest.raises(ValueError, match=r"checkpoints of a different distillation \(lr: 0.01 there, 0.02 now\)"):
        distill(pairs_file, cut, DistillOptions(max_steps=5, batch_size=2, grad_accum=2, lr=2e-2, save_steps=3, seed=7))
    resumed = distill(pairs_file, cut, options)
    assert resumed.resumed_from == 3 and resumed.steps == whole.steps == 5
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (cut / "training_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4", "5"]  # the steps before the cut too


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, pairs_file):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        distill(pairs_file, tmp_path / name, DistillOptions(max_steps=3, seed=seed, **FAST))
    a, b, c = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the batches come in another order


# --- DPO and LoRA ---------------------------------------------------------------------------------------------------

def test_dpo_trains_and_the_folder_loads(tmp_path, pairs_file):
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(objective="dpo", max_steps=4, **FAST))
    assert summary.steps == 4 and summary.first_loss == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert torch.isfinite(torch.tensor(summary.last_loss)) and summary.last_loss < summary.first_loss
    config = json.loads((tmp_path / "out" / "distill_config.json").read_text())
    assert config["training"]["beta"] == 0.1 and config["lambda"] is None
    assert "rewards/margins" in (tmp_path / "out" / "training_log.csv").read_text().splitlines()[0]
    assert all(r.token_ids for r in _greedy(load_model(str(tmp_path / "out")), ["<s>user: hi</s><s>assistant: "]))


@pytest.mark.parametrize("objective", ["gkd", "dpo"])
def test_lora_adapters_are_merged_into_a_plain_model(tmp_path, pairs_file, tiny_model_dir, objective):
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(objective=objective, lora=True, lora_r=4,
                                                                   max_steps=4, **FAST))
    out = tmp_path / "out"
    assert summary.steps == 4 and not list(out.glob("adapter*"))
    trained, base = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert trained.keys() == base.keys()  # no lora_A / lora_B: the adapters are merged
    assert not all(torch.equal(trained[k], base[k]) for k in base)
    assert json.loads((out / "distill_config.json").read_text())["training"]["lora_r"] == 4
    assert all(r.token_ids for r in _greedy(load_model(str(out)), ["<s>user: hi</s><s>assistant: "]))


# --- the command line and its refusals ------------------------------------------------------------------------------

def test_cli_prints_the_summary_and_how_to_use_the_model(tmp_path, pairs_file, tiny_model_dir, capsys):
    out = tmp_path / "out"
    assert main(["distill", pairs_file, "--out", str(out), "--max-steps", "2", "--lr", "1e-2", "--lam", "0"]) == 0
    printed = capsys.readouterr().out
    assert "on 6 pairs: 2 steps, loss" in printed and f"redumix run --model {out}" in printed
    assert f"--decoder dera --decoder-config aligned={out}" in printed and str(tiny_model_dir) in printed
    assert json.loads((out / "distill_config.json").read_text())["lambda"]["given"] == 0.0


def test_a_folder_holding_a_model_is_kept_unless_forced(tmp_path, pairs_file, capsys):
    out = tmp_path / "out"
    args = ["distill", pairs_file, "--out", str(out), "--max-steps", "1"]
    assert main(args) == 0
    before = _listing(out)
    assert main(args + ["--seed", "1"]) == 2
    assert "already holds a model; choose another folder, or pass --force" in capsys.readouterr().err
    assert _listing(out) == before
    assert main(args + ["--seed", "1", "--force"]) == 0
    (replaced,) = out.glob("replaced-*")
    assert {k: v for k, v in _listing(replaced).items()} == before  # every old file, moved not deleted
    assert json.loads((out / "distill_config.json").read_text())["training"]["seed"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--lam", "-1"], r"--lam \(=-1\) must be in \[0, 1\]"),
    (["--beta", "2"], r"--beta \(=2\) must be in \[0, 1\] for gkd"),
    (["--objective", "dpo", "--lam", "0.5"], r"--lam \(=0.5\) sets the teacher mixture of --objective gkd"),
    (["--objective", "gdk"], r"Unknown objective 'gdk'. Did you mean: gkd\?"),
    (["--max-steps", "0"], r"--max-steps \(=0\) must be 1 or more"),
    (["--batch-size", "0"], r"--batch-size \(=0\) must be 1 or more"),
    (["--lora-r", "8"], r"--lora-r \(=8\) sets the adapters of --lora; add --lora"),
    (["--rule", "all"], r"--rule \(='all'\) selects records of a run folder, but SOURCE .* is a pairs file"),
])
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, pairs_file, capsys, args, message):
    assert main(["distill", pairs_file, "--out", str(tmp_path / "out"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_bad_sources_are_refused_with_the_fix(tmp_path, tiny_model_dir, capsys):
    def refused(source, *extra) -> str:
        assert main(["distill", str(source), "--out", str(tmp_path / "out"), *extra]) == 2
        assert not (tmp_path / "out").exists()
        return capsys.readouterr().err

    assert "does not exist; give a run folder made with --decoder redumix" in refused(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no run (no spec.json); pass a folder written by `redumix run`" in refused(tmp_path / "empty")
    tokenizer = tiny_model().tokenizer
    greedy = RunDir(tmp_path / "greedy")
    greedy.write_spec({"run": RUN_SPEC | {"decoder": "greedy", "decoder_config": {}}})
    record = _records(tokenizer, str(tiny_model_dir))[0]
    greedy.append([{k: v for k, v in record.items() if not k.startswith("stage1") and k != "lambda"}
                   | {"decoder": "greedy"}])
    assert "has no ReDuMix records (1 records of other decoders)" in refused(greedy.path)
    stuck = RunDir(tmp_path / "stuck")
    stuck.write_spec({"run": RUN_SPEC})
    stuck.append([r for r in _records(tokenizer, str(tiny_model_dir)) if not r["correct"]])
    err = refused(stuck.path)
    assert "empty harvest: none of its 3 ReDuMix records gives a pair under --rule improved" in err
    assert "pass --rule all" in err
    good = _pair(tokenizer, "Say hi.", "hi", str(tiny_model_dir))
    bad = _write_pairs(tmp_path / "bad.jsonl", [good])
    with open(bad, "a") as f:
        f.write("{not json\n")
    assert "line 2 is not JSON" in refused(bad)
    old = _write_pairs(tmp_path / "old.jsonl", [{k: v for k, v in good.items() if k != "reflective_prompt"}])
    err = refused(old)
    assert "line 1 has no 'reflective_prompt'" in err and "--objective dpo" in err and "harvest the run again" in err
    mixed = _write_pairs(tmp_path / "mixed.jsonl", [good, good | {"model": "other"}])
    assert "the pairs come from several models" in refused(mixed) and "pass --model" in refused(mixed)
    nolam = _write_pairs(tmp_path / "nolam.jsonl", [{k: v for k, v in good.items() if k != "lambda"}])
    assert "has no 'lambda' in [0, 1]" in refused(nolam) and "pass --lam" in refused(nolam)
    assert "model (='nowhere/model'): no such file or folder" in refused(mixed, "--model", "nowhere/model")


@pytest.mark.parametrize(("missing", "args"), [("peft", ["--lora"]), ("trl", ["--objective", "dpo"])])
def test_a_missing_training_library_names_the_install_command(tmp_path, pairs_file, capsys, monkeypatch, missing,
                                                               args):
    monkeypatch.setitem(sys.modules, missing, None)  # what an uninstalled package looks like to import
    assert main(["distill", pairs_file, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert f"needs the Python package {missing!r}" in err and 'pip install "redumix[distill]"' in err
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_new_folder_or_a_distillations(tmp_path, pairs_file, tiny_model_dir, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["distill", pairs_file, "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["distill", pairs_file, "--out", str(other)]) == 2
    assert "holds files that are not a distillation's (notes.txt)" in capsys.readouterr().err
    assert _listing(other) == {"notes.txt": b"mine"}
    before = _listing(tiny_model_dir)
    assert main(["distill", pairs_file, "--out", str(tiny_model_dir), "--force"]) == 2
    assert "holds the base model" in capsys.readouterr().err and _listing(tiny_model_dir) == before


def test_a_distillation_stopped_before_its_first_checkpoint_leaves_nothing_in_the_way(tmp_path, pairs_file):
    with pytest.raises(KeyboardInterrupt):
        distill(pairs_file, tmp_path / "out", DistillOptions(max_steps=2, **FAST), callbacks=[_InterruptAt(1)])
    assert "before the first checkpoint" in interrupted_message(tmp_path / "out")
    summary = distill(pairs_file, tmp_path / "out", DistillOptions(max_steps=2, seed=5, **FAST))  # other settings
    assert summary.resumed_from is None and summary.steps == 2


# --- a small ReDuMix run ---------------------------------------------------------------------------------------------

RUN_SPEC = {"env": "basic_arithmetic", "n": 3, "seed": 0, "decoder": "redumix",
            "decoder_config": {"lam": [0.0, 0.5, 1.0]}}


def _records(tokenizer, model: str) -> list[dict]:
    def record(i, lam, first, first_ok, redo, redo_ok):
        x, x2 = _contexts(tokenizer, QUESTIONS[i])
        return {
            "env": "basic_arithmetic", "problem_id": f"basic_arithmetic-s0-{i}", "gold": "7", "model": model,
            "lambda": lam, "decoder": "redumix", "seed": 0, "new_tokens": 3, "latency_s": 0.1, "decode_s": 0.1,
            "feedback_policy": "ground_truth", "feedback": "The expected answer is: 7", "reflection": "Check.",
            "contexts": [x, x2], "stage1_completion": first, "stage1_answer": None, "stage1_correct": first_ok,
            "completion": redo, "answer": None, "correct": redo_ok, "score": float(redo_ok),
        }

    return [
        record(0, 0.0, "5", False, "<answer>7</answer>", True),  # improved
        record(0, 1.0, "5", False, "5", False),  # identical: never a pair
        record(1, 0.0, "<answer>7</answer>", True, "8", False),  # got worse
        record(2, 0.5, "6", False, "9", False),  # changed, still wrong
    ]
