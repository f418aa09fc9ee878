"""``python -m pickaxe`` is the ``pickaxe`` command (see `pickaxe.cli`)."""

from .cli import main

if __name__ == "__main__":
    main()
