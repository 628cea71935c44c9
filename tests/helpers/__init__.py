"""Helpers shared by test modules: `sweeps` (sweep configs on the tiny model, their record keys, reading
records back), `report_folders` (synthetic sweep folders for reports) and `cli` (`redumix` in a child
process, and how a refused command must end). The tiny model itself is `tests.tiny`."""
