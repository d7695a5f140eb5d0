"""Run one spawned rank's work and leave through os._exit.

gloo's worker threads can still be joinable when the interpreter runs C++ destructors at exit
('terminate called without an active exception', SIGABRT), which would fail a run whose results
are already written. An error inside the work still exits 1, with its traceback on stderr."""
import os
import sys
import traceback


def run_then_exit(work, *args) -> None:
    code = 1
    try:
        work(*args)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
