"""`python -m pixmill`: the same command line as the `pixmill` script."""

from pixmill.cli import main

# The guard matters: a worker process started by `spawn` imports this module again.
if __name__ == "__main__":
    main(prog_name="pixmill")
