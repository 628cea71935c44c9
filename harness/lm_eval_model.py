"""Former home of the lm-eval model; `import harness.lm_eval_model` still registers "redumix"."""
from harness.lmeval.model import *  # noqa: F401,F403
from harness.lmeval.model import RedumixLM  # noqa: F401
