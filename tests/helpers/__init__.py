"""Helpers shared by test modules: `sweeps` (sweep configs on the tiny model, their record keys, reading
records back), `report_folders` (synthetic sweep folders for reports), `cli` (`redumix` in a child
process, and how a refused command must end), `serve` (a server in the test's process and the
`openai` client) and `digit_model` (the tiny model trained to answer with its chat's one digit).
The tiny model itself is `tests.tiny`."""
