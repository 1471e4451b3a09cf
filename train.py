"""Train an MLP: `python train.py [group=option ...] [key=value ...] [-m]`. See README.md."""

from mlplab.cli import main

if __name__ == "__main__":
    main()
