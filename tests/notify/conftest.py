from tests.notify.rig import rig  # noqa: F401  (the rig fixture for every notify test)
