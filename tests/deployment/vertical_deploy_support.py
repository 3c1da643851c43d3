"""Support for the vertical deployment tests (each fit test and each drop-out test in a file of its own, so that
`make test`'s workers run them side by side): the folders of a server operator and three parties, made with the
fedx CLI on small generated tables, for the vertical GLM (an insurer and two hospitals) and for SecureBoost (a
bank, a telecom operator and a utility), and the start of `fedx server` and the parties' `fedx node`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from fedx_deploy_support import Processes, cli, wait_for

from fedx.data.synthetic.credit import generate_credit
from fedx.data.synthetic.health_insurance import generate_health_insurance

GLM_PARTIES = ("insurer", "hospital_a", "hospital_b")
FEATURES = {"insurer": {"age_band": "categorical", "sex": "categorical"},
            "hospital_a": {"diabetes": "numeric", "hypertension": "numeric"},
            "hospital_b": {"bmi": "numeric"}}


def party_folders(root: Path, port: int, tables: dict[str, pd.DataFrame], names: Sequence[str]) -> None:
    """The certificates, and a folder per party with its node keys, its table and its node file.

    Each table is also written beside the server's config, for the simulated run of the same config.
    """
    root.mkdir(parents=True, exist_ok=True)
    res = cli("certs", "--out", "certs", cwd=root)
    assert res.returncode == 0, res.stderr
    (root / "nodekeys").mkdir()
    for name in names:
        site = root / name
        site.mkdir()
        res = cli("node-keys", "--name", name, "--out", str(site), cwd=root)
        assert res.returncode == 0, res.stderr
        (root / "nodekeys" / f"{name}.pub").write_bytes((site / f"{name}.pub").read_bytes())
        tables[name].to_csv(site / f"{name}.csv", index=False)
        tables[name].to_csv(root / f"{name}.csv", index=False)
        node = {"name": name, "data": f"{name}.csv", "out_dir": "out",
                "superlink": {"address": f"127.0.0.1:{port}", "root_certificates": "../certs/ca.crt",
                              "auth_key": f"{name}.key"}}
        (site / "node.yaml").write_text(yaml.safe_dump(node))


def write_job(root: Path, port: int, job: dict) -> None:
    """The server's config: ``job`` with the deployment section of these folders."""
    job["deployment"] = {"port": port, "certificates": "certs", "nodes": "nodekeys", "out_dir": "server-out",
                         "wait_seconds": 60}
    (root / "server.yaml").write_text(yaml.safe_dump(job, sort_keys=False))


def build_vertical(root: Path, port: int, *, n: int = 2_500, timeout: float = 60) -> dict[str, pd.DataFrame]:
    """The folders of a server operator and three parties, made with the fedx CLI, on small generated tables."""
    data = generate_health_insurance(n, hospitals=2, hospital_split="columns", seed=5)
    tables = {"insurer": data.insurer, **data.hospitals}
    party_folders(root, port, tables, GLM_PARTIES)
    parties = {name: {"source": f"{name}.csv", "features": FEATURES[name]} for name in GLM_PARTIES}
    parties["insurer"].update(target="claims", exposure="exposure")
    write_job(root, port, {
        "name": "vertical-deployed", "seed": 5, "task": "claim_frequency", "model": {"kind": "glm"},
        "data": {"partition": "vertical", "id": "person_id", "label_party": "insurer", "parties": parties,
                 "test_fraction": 0.0},
        "federation": {"aggregator": "newton", "rounds": 30, "timeout": timeout},
        "security": {"encryption": "none", "psi_reveal": "all"}})
    return tables


SB_PARTIES = ("bank", "telecom", "utility")
BANK = {"debt_to_income": "numeric", "income": "numeric", "past_delinquencies": "numeric"}


def build_secureboost(root: Path, port: int, *, n: int = 2_000, timeout: float = 60) -> dict[str, pd.DataFrame]:
    """The folders of a server operator and three parties, made with the fedx CLI, on small generated tables."""
    tables = generate_credit(n, seed=4).tables()
    party_folders(root, port, tables, SB_PARTIES)
    parties: dict[str, dict] = {name: {"source": f"{name}.csv"} for name in SB_PARTIES}
    parties["bank"].update(target="default", features=BANK)
    write_job(root, port, {
        "name": "secureboost-deployed", "seed": 3, "task": "fraud",
        "model": {"kind": "gbdt", "trees": 2, "depth": 2, "learning_rate": 0.3, "bins": 16},
        "data": {"partition": "vertical", "id": "customer_id", "label_party": "bank", "parties": parties,
                 "test_fraction": 0.3},
        "federation": {"timeout": timeout},
        "security": {"encryption": "none", "psi_reveal": "all"}})
    return tables


def start_all(root: Path, processes: Processes, parties: Sequence[str]) -> None:
    processes.start("server", ["server", "--config", "server.yaml"], root)
    wait_for(lambda: "launched" in (root / "server.out").read_text(), 120, "the run to launch")
    for name in parties:
        processes.start(name, ["node", "--config", "node.yaml"], root / name)
