"""The ClientApp: local training and evaluation. ``he_mod`` decrypts what arrives and encrypts the reply."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedx.flower import he_mod
from flower_app import task

app = ClientApp(mods=[he_mod(task.key_folder)])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received (already decrypted) model on this partition's rows."""
    x, y, _, _ = task.load_data(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    model = task.fit(task.from_record(msg.content["arrays"]), x, y, int(context.run_config["local-epochs"]),
                     float(context.run_config["learning-rate"]))
    loss, _ = task.evaluate(model, x, y)
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    return Message(RecordDict({"arrays": task.to_record(model), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the received (already decrypted) global model on this partition's held-out rows."""
    _, _, x, y = task.load_data(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    loss, accuracy = task.evaluate(task.from_record(msg.content["arrays"]), x, y)
    metrics = MetricRecord({"eval-loss": loss, "eval-accuracy": accuracy, "num-examples": len(y)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
