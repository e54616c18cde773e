from __future__ import annotations

import pytest

from postmesh.common.config import ServiceSettings, load_settings


def test_settings_come_from_postmesh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTMESH_OPS_PORT", "9999")
    monkeypatch.setenv("POSTMESH_BUS", "kafka")
    s = load_settings(ServiceSettings)
    assert s.ops_port == 9999 and s.bus == "kafka"


def test_bad_setting_stops_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTMESH_OPS_PORT", "not-a-port")
    monkeypatch.setenv("POSTMESH_BUS", "carrier-pigeon")
    with pytest.raises(SystemExit) as exc:
        load_settings(ServiceSettings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "POSTMESH_OPS_PORT='not-a-port'" in err
    assert "POSTMESH_BUS='carrier-pigeon'" in err
