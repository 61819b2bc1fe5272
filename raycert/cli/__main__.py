"""``python -m raycert.cli``: the ``raycert`` command."""

from raycert.cli import app

if __name__ == "__main__":
    app(prog_name="raycert")
