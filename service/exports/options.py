"""What goes into an export (ExportOptions) and the three splits it fills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import BadInput
from service.settings import Settings

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExportOptions:
    """What goes into an export; stored on the DatasetExport row and in the card."""

    include_confident: float | None = None
    min_per_class: int = 10
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    group_by_site: bool = True

    def __post_init__(self) -> None:
        if self.include_confident is not None and not 0.0 < self.include_confident <= 1.0:
            raise BadInput("include_confident must be in (0, 1]")
        if self.min_per_class < 1:
            raise BadInput("min_per_class must be at least 1")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise BadInput(f"{name} must be between 0 and 0.5")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ExportOptions:
        values: dict[str, Any] = {
            "include_confident": settings.export_include_confident,
            "min_per_class": settings.export_min_per_class,
            "val_fraction": settings.export_val_fraction,
            "test_fraction": settings.export_test_fraction,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def fractions(self) -> dict[str, float]:
        return {
            "train": 1.0 - self.val_fraction - self.test_fraction,
            "val": self.val_fraction,
            "test": self.test_fraction,
        }
