"""What the distributed-training helpers share: free loopback ports for a cluster, and a callback
that records the loss Keras logs."""
import socket

from tworec.tf_setup import keras


def free_ports(n: int) -> list:
    """``n`` loopback ports free a moment ago (the OS picks them; the caller binds them next)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class BatchLosses(keras.callbacks.Callback):
    """``values``: logs["loss"] after every batch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


class EpochLosses(keras.callbacks.Callback):
    """``values``: logs["loss"] after every epoch (ParameterServerStrategy refuses batch-level
    callbacks)."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(float(logs["loss"]))
