"""Host-free pieces of the WebUI script: settings normalisation, infotext keys, readout text, XYZ specs."""

import types

import pytest

from lib_upsample_guidance.core.planner import MODEL_FAMILIES
from lib_upsample_guidance.webui import infotext, settings, ui, xyz
from lib_upsample_guidance.webui.settings import DEFAULT_FAMILY_BASES, UGSettings, model_family


def test_defaults_and_positional_round_trip():
    s = UGSettings()
    assert (s.enabled, s.guidance_scale, s.eta, s.base_resolution, s.resampler, s.guide_hires_pass) == (
        False,
        1.0,
        0.6,
        None,
        "auto",
        True,
    )
    custom = UGSettings(True, 1.25, 0.4, 768, "spectral", False)
    assert UGSettings.from_script_args(custom.as_args()) == custom
    assert UGSettings.from_script_args([]) == UGSettings()
    assert UGSettings.from_script_args([True], custom) == UGSettings(True, 1.25, 0.4, 768, "spectral", False)


@pytest.mark.parametrize(
    "raw,want",
    [
        ("Auto", None),
        ("auto", None),
        ("", None),
        (None, None),
        (0, None),
        ("512", 512),
        (768, 768),
        (1024.0, 1024),
        ("640px", 640),
        (" 96 ", 96),
    ],
)
def test_base_resolution_forms(raw, want):
    assert UGSettings(base_resolution=raw).base_resolution == want


@pytest.mark.parametrize(
    "field,value",
    [
        ("guidance_scale", float("nan")),
        ("guidance_scale", -0.1),
        ("guidance_scale", True),
        ("eta", "1.01"),
        ("eta", None),
        ("base_resolution", 512.5),
        ("base_resolution", 9000),
        ("base_resolution", True),
        ("resampler", 3),
        ("enabled", 2),
        ("enabled", "yes please"),
        ("guide_hires_pass", None),
    ],
)
def test_bad_values_name_the_field(field, value):
    names = {"guidance_scale": "scale", "guide_hires_pass": "hires_pass"}
    with pytest.raises(ValueError, match=repr(names.get(field, field))):
        UGSettings(**{field: value})


def test_dict_form_and_overrides():
    s = UGSettings.from_script_args([{"enabled": "true", "guidance_scale": "1.1", "base": "Auto"}])
    assert (s.enabled, s.guidance_scale, s.base_resolution) == (True, 1.1, None)
    with pytest.raises(ValueError, match="set the same field"):
        UGSettings.from_dict({"scale": 1, "guidance_scale": 1})
    with pytest.raises(ValueError, match="at most 7"):
        UGSettings.from_script_args([True] * 8)
    o = s.with_overrides({"ug_scale": 0.5, "ug_base": 640, "ug_enabled": False, "unrelated": 1})
    assert (o.guidance_scale, o.base_resolution, o.enabled) == (0.5, 640, False)
    with pytest.raises(ValueError, match="'eta'"):
        s.with_overrides({"ug_eta": 3})


def test_family_bases_match_the_planner():
    for key, px in DEFAULT_FAMILY_BASES.items():
        if key in MODEL_FAMILIES:
            assert MODEL_FAMILIES[key].base_size_px == px
    m = types.SimpleNamespace
    assert model_family(m(is_sd1=True)) == "sd1"
    assert model_family(m(is_sd2=True, parameterization="v")) == "sd2"
    assert model_family(m(is_sd2=True, parameterization="eps")) == "sd2_eps"
    assert model_family(m(is_sdxl=True)) == "sdxl" and model_family(m(is_sd3=True)) == "sd3"
    assert model_family(m()) is None


def test_infotext_make_and_parse():
    s = UGSettings(True, 1.2, 0.45, None, "box", False)
    params = infotext.make_params(s, base_px=512, hires_used=True)
    assert params == {
        "UG scale": "1.2",
        "UG eta": "0.45",
        "UG base": "512",
        "UG resampler": "box",
        "UG hires pass": "False",
    }
    assert infotext.parse_params(params) == {
        "guidance_scale": 1.2,
        "eta": 0.45,
        "base_resolution": 512,
        "resampler": "box",
        "guide_hires_pass": False,
    }
    assert "UG hires pass" not in infotext.make_params(s, base_px=512)
    warned = []
    assert infotext.parse_params({"UG scale": "x", "UG eta": "0.5"}, warned.append) == {"eta": 0.5}
    assert len(warned) == 1 and "UG scale" in warned[0]
    assert infotext.paste_field("base_resolution")({"UG base": "auto"}) == "Auto"
    assert infotext.paste_field("base_resolution")({"UG base": "640"}) == "640"
    assert infotext.paste_field("guidance_scale")({}) is None
    assert infotext.paste_enabled({"UG eta": "bad"}) is True and infotext.paste_enabled({}) is False


def test_readout_text():
    kw = dict(enabled=True, guidance_scale=1.0, eta=0.6, resampler="auto", auto_base_px=512)
    assert ui.readout_text(1536, 1024, base="Auto", **kw) == (
        "1536x1024 -> guided from 768x512 (2x, box), first 60% of the noise range"
    )
    assert "no guidance" in ui.readout_text(512, 512, base="Auto", **kw)
    assert "spectral" in ui.readout_text(768, 768, base="Auto", **kw)
    assert ui.readout_text(1024, 1024, base="junk", **kw) == "Base resolution: Auto or 64-8192 px."
    assert (
        ui.readout_text(1024, 1024, base="12", **kw) == "Base resolution: Auto or 64-8192 px."
    )  # typing 128
    assert "guided from 1024x1024 (1x" not in ui.readout_text(1024, 1024, base="0", **kw)  # 0 = Auto
    assert ui.readout_text("x", 1024, base="Auto", **kw) == "Check the values above."
    assert ui.readout_text(1024, 1024, base="Auto", **{**kw, "enabled": False}) == "Off."
    assert "no guidance" in ui.readout_text(1024, 1024, base="Auto", **{**kw, "eta": 0})


def test_xyz_specs_parse_like_the_settings():
    specs = {s["attr"]: s for s in xyz.axis_specs()}
    assert set(specs) == {"ug_enabled", "ug_scale", "ug_eta", "ug_base", "ug_temporal"}
    assert specs["ug_base"]["parse"]("Auto") is None and specs["ug_enabled"]["parse"]("False") is False
    assert specs["ug_temporal"]["parse"]("Auto") is None and specs["ug_temporal"]["parse"]("2") == 2.0
    assert set(specs) == set(settings.OVERRIDE_ATTRS)  # every axis is read back by the script
    with pytest.raises(ValueError, match="'temporal_factor'"):
        specs["ug_temporal"]["parse"]("0.5")
    with pytest.raises(ValueError):
        specs["ug_scale"]["parse"]("-1")
    assert (
        xyz.find_xyz_module(
            [types.SimpleNamespace(script_class=type("S", (), {"__module__": "other.py"}), module=None)]
        )
        is None
    )


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (None, None),
        ("auto", None),
        ("Auto", None),
        ("", None),
        (0, None),
        ("0", None),
        (2, 2.0),
        ("1.5", 1.5),
        (8, 8.0),
        (1, 1.0),
    ],
)
def test_temporal_factor_values(raw, want):
    s = UGSettings.from_script_args([True, 1, 0.6, "Auto", "auto", True, raw])
    assert s.temporal_factor == want
    assert UGSettings.from_dict({"temporal_factor": raw}).temporal_factor == want
    assert UGSettings.from_script_args(s.as_args()) == s


@pytest.mark.parametrize("raw", [0.5, 9, "x", True, float("nan"), [2]])
def test_temporal_factor_rejects_with_a_message(raw):
    with pytest.raises(ValueError, match="'temporal_factor' must be 'auto' or a number in \\[1, 8\\]"):
        UGSettings(temporal_factor=raw)


def test_temporal_factor_infotext_round_trip():
    from lib_upsample_guidance.webui import animatediff

    params = animatediff.infotext_params(2.0, 32, 16)
    assert params == {infotext.KEY_TEMPORAL: "2", infotext.KEY_FRAMES: "32 -> 16"}
    assert infotext.parse_params(params) == {"temporal_factor": 2.0}
    assert infotext.paste_field("temporal_factor")(params) == "2"
    auto = animatediff.infotext_params(None, 32, 16)
    assert infotext.paste_field("temporal_factor")(auto) == "Auto"
    assert infotext.paste_field("temporal_factor")({}) is None
    assert infotext.KEY_FRAMES in infotext.ALL_KEYS  # cleared with the other keys
