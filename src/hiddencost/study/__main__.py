"""``python -m hiddencost.study …``: the ``hiddencost study`` commands on their own."""

from hiddencost.study.cli import study_app

if __name__ == "__main__":
    study_app(prog_name="hiddencost study")
