"""``python -m hiddencost …``: the ``hiddencost`` command line."""

from hiddencost.cli import app

if __name__ == "__main__":
    app(prog_name="hiddencost")
