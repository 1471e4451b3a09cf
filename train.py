"""Train an MLP: `python train.py [group=option ...] [key=value ...] [-m]`. See README.md."""

from mlplab.cli import run

if __name__ == "__main__":
    run()
