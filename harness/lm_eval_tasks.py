"""Former home of the task functions; task YAMLs written before the move still resolve here."""
from harness.lmeval.tasks import *  # noqa: F401,F403
from harness.lmeval.tasks import doc_to_text, make_dataset, process_results  # noqa: F401
