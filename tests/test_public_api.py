import aiflywheel


def test_public_api_is_pinned() -> None:
    assert aiflywheel.__all__ == [
        "DataCheckResult",
        "Dataset",
        "FlywheelError",
        "LoadedModel",
        "Prediction",
        "Recipe",
        "Record",
        "Store",
        "__version__",
        "check_data",
        "explain_prediction",
        "load",
        "load_recipe",
    ]
    for name in aiflywheel.__all__:
        assert getattr(aiflywheel, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aiflywheel.nope  # noqa: B018
