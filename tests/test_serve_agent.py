"""`neuralab serve` on an agent's run: POST /act answers the greedy action and Q-values the
network gives, bad observations get a 422 naming the expected shape, and the page's episode
is a real GIF of the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import neuralab
from neuralab.rl.runs import is_agent_run, load_agent_network
from neuralab.serve.agent import create_agent_app

fastapi_testclient = pytest.importorskip("fastapi.testclient")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agent") / "run"
    neuralab.rl.train(
        "cartpole-dqn", steps=300, out=str(out), log=lambda _: None,
        overrides=["train.progress=none", "train.tensorboard=false", "agent.hidden=[16]",
                   "replay.learning_starts=100", "train.eval_every=300",
                   "train.final_episodes=0"],
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def client(cartpole_run: Path):
    app = create_agent_app(cartpole_run, max_body_bytes=4096, max_items=8)
    return fastapi_testclient.TestClient(app)


def test_act_returns_the_networks_greedy_choice(client, cartpole_run: Path) -> None:
    network, _ = load_agent_network(cartpole_run / "best")
    observations = [[0.0, 0.1, -0.05, 0.2], [0.5, -1.0, 0.1, 0.0]]
    reply = client.post("/act", json={"observations": observations})
    assert reply.status_code == 200
    expected = network(torch.tensor(observations))
    assert reply.json()["actions"] == expected.argmax(1).tolist()
    torch.testing.assert_close(torch.tensor(reply.json()["q_values"]), expected, atol=1e-5,
                               rtol=0)  # fmt: skip
    single = client.post("/predict", json={"observation": observations[0]}).json()
    assert single["actions"] == expected.argmax(1).tolist()[:1]


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"observation": [1, 2, 3]}, "shape [4]"),
        ({"observation": ["a", 1, 2, 3]}, "numbers only"),
        ({"observation": [0, 0, 0, float("inf")]}, "finite"),
        ({"obs": [0, 0, 0, 0]}, 'exactly one of "observation"'),
        ({"observations": [[0, 0, 0, 0]] * 9}, "1 to 8 observations"),
    ],
)
def test_bad_observations_get_422_naming_what_fits(client, payload, message) -> None:
    import json

    reply = client.post(
        "/act", content=json.dumps(payload), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    assert message in reply.json()["detail"]


def test_limits_info_page_and_episode(client) -> None:
    assert client.post("/act", content=b"x" * 5000).status_code == 413
    info = client.get("/info").json()
    assert info["env"] == "CartPole-v1" and info["actions"] == 2 and info["obs_shape"] == [4]
    page = client.get("/")
    assert page.status_code == 200 and "agent.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    gif = client.get("/episode.gif")
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"
    assert client.get("/episode.gif").content == gif.content  # recorded once
    assert 'route="/act"' in client.get("/metrics").text


def test_agent_runs_are_told_apart_from_classifiers(cartpole_run: Path, tmp_path: Path) -> None:
    assert is_agent_run(cartpole_run) and is_agent_run(cartpole_run / "checkpoint")
    assert not is_agent_run(tmp_path)
