"""TensorBoard scalars of a training run, written when the tensorboard package is installed
(pip install -e '.[tensorboard]'); without it nothing is written."""


class ScalarLog:
    """Scalars under `folder`, against the training iteration. A run resumed at `start` hides
    the records that an earlier (killed) run wrote from `start` on."""

    def __init__(self, folder, start):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(folder), purge_step=start)

    def add(self, step, scalars):
        """scalars: {tag: number or None}; None is skipped."""
        if self.writer is None:
            return
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()
