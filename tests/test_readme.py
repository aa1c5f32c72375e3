"""The README is the operator's manual: it must name every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from omnistock.events.settings import KafkaSettings, ServiceSettings
from omnistock.inventory.settings import InventorySettings
from omnistock.orders.settings import OrdersSettings
from omnistock.pos_gateway.settings import PosGatewaySettings
from omnistock.topic_operator.settings import OperatorSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SETTINGS: list[type[BaseSettings]] = [
    KafkaSettings,
    ServiceSettings,
    InventorySettings,
    OrdersSettings,
    PosGatewaySettings,
    OperatorSettings,
]


def env_names(model: type[BaseSettings]) -> list[str]:
    prefix = str(model.model_config.get("env_prefix") or "")
    names = []
    for name, field in model.model_fields.items():
        if name == "kafka":  # nested settings, read with their own prefix
            continue
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def test_every_environment_variable_is_documented() -> None:
    missing = [
        env
        for model in SETTINGS
        for env in env_names(model)
        if f"`{env}`" not in README and f"`{env}` /" not in README and f"/ `{env}`" not in README
    ]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_the_two_commands_are_in_the_readme() -> None:
    assert "./scripts/dev" in README
    assert "./scripts/test" in README
