"""The ServerApp: FedAvg over ciphertexts. The server holds the public key only and never sees the model."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedx.flower import EncryptedFedAvg
from flower_app import task

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds, then write the encrypted final model for the institutions."""
    strategy = EncryptedFedAvg(Path(task.key_folder(context)) / "public.fxk")
    result = strategy.start(grid=grid, initial_arrays=task.to_record(task.init_model()),
                            num_rounds=int(context.run_config["num-server-rounds"]))
    out = Path(str(context.run_config["final-model"]))
    out.write_bytes(bytes(result.arrays["blob"].data))
    final = result.evaluate_metrics_clientapp[max(result.evaluate_metrics_clientapp)]
    print(f"encrypted final model: {out.resolve()} ({out.stat().st_size} bytes); "
          f"clients' held-out accuracy {final['eval-accuracy']:.4f}, loss {final['eval-loss']:.4f}")
