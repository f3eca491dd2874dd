"""``python -m prioroute``: the same as the ``prioroute`` command."""

from prioroute._cli import main

if __name__ == "__main__":  # pragma: no branch
    main(prog_name="prioroute")
