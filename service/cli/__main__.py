"""`python -m service.cli`: the same as the `herpscore` command."""

from service.cli import main

if __name__ == "__main__":
    main(prog_name="herpscore")
