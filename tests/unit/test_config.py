import pytest

from mycelium.config import ConfigError, load_config


def test_defaults_without_a_file(tmp_path):
    cfg = load_config(tmp_path, env={})
    assert cfg.node.max_role == "sclerotium"
    assert cfg.socket_path == tmp_path / "control.sock"


def test_layers_file_then_env_then_flags(tmp_path):
    (tmp_path / "config.toml").write_text('[node]\nmax_role = "rhizomorph"\nheartbeat_s = 5\n[log]\nlevel = "debug"\n')
    cfg = load_config(tmp_path, env={})
    assert (cfg.node.max_role, cfg.node.heartbeat_s, cfg.log.level) == ("rhizomorph", 5, "debug")
    cfg = load_config(tmp_path, env={"MYCELIUM__NODE__MAX_ROLE": "hypha", "MYCELIUM__NODE__LISTEN": "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2"})
    assert cfg.node.max_role == "hypha"
    assert cfg.node.listen == ("/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2")
    cfg = load_config(tmp_path, env={"MYCELIUM__NODE__MAX_ROLE": "hypha"}, overrides={"node": {"max_role": "sclerotium", "listen": None}})
    assert cfg.node.max_role == "sclerotium"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[node]\nlisten_port = 4\n", r"unknown key node.listen_port in .*config.toml"),
        ("[nodes]\n", r"unknown section \[nodes\]"),
        ("[node]\nheartbeat_s = 'soon'\n", r"node.heartbeat_s in .*expected an integer"),
        ("[node]\nmax_role = 'king'\n", "max_role must be one of"),
        ("[node\n", "not valid TOML"),
        ("[node]\nlisten = ['0.0.0.0:4701']\n", "is not a multiaddr"),
        ("[node]\nmdns = 'maybe'\n", "expected true or false"),
    ],
)
def test_bad_config_names_the_key_and_file(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path, env={})


def test_bad_env_is_named(tmp_path):
    with pytest.raises(ConfigError, match="the environment"):
        load_config(tmp_path, env={"MYCELIUM__NODE__NOPE": "1"})
    with pytest.raises(ConfigError, match="MYCELIUM__SECTION__FIELD"):
        load_config(tmp_path, env={"MYCELIUM__NODE": "1"})
