"""The model price table used when a span carries no cost."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True, slots=True)
class PriceTable:
    models: tuple[str, ...]
    input_per_million: tuple[float, ...]
    output_per_million: tuple[float, ...]
    source: str
    date: str

    def as_parameters(self) -> dict[str, list]:
        return {
            "price_models": list(self.models),
            "price_input": list(self.input_per_million),
            "price_output": list(self.output_per_million),
        }


def load_prices(path: Path | None = None) -> PriceTable:
    text = Path(path).read_text() if path else resources.files("registry_api.stats").joinpath("prices.yaml").read_text()
    document = yaml.safe_load(text) or {}
    models = document.get("models") or {}
    if not isinstance(models, dict):
        raise ValueError(f"{path or 'prices.yaml'}: 'models' must map model names to {{input, output}}")
    names, inputs, outputs = [], [], []
    for name, price in models.items():
        try:
            inputs.append(float(price["input"]))
            outputs.append(float(price.get("output", 0.0)))
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{path or 'prices.yaml'}: bad price for {name!r}: {error}") from error
        names.append(str(name))
    return PriceTable(tuple(names), tuple(inputs), tuple(outputs), str(document.get("source", "")), str(document.get("date", "")))
