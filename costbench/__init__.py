"""costbench: measured answers to "which hardware, backend and compression should I deploy on?"."""

import os as _os

__version__ = "0.1.0"

if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "harness")):
    # The checkout's partial tree (core/ and commands/), found because its root is on sys.path. An editable
    # install maps the other folders in; a non-editable install elsewhere on sys.path is the real package.
    import sys as _sys

    from costbench import _checkout

    if _checkout.step_aside(__name__, __file__, required=False, accept=_checkout.is_full_tree):
        _sys.modules.pop("costbench._checkout", None)  # the installed package has its own copy
