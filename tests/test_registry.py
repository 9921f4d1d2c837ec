"""The stage registry: every name loads its class; stages declare what they make and need."""

import pytest

from pipeline.registry import ANY_ARTIFACT, STAGES, how_to_make, stage_class


@pytest.mark.parametrize("name", list(STAGES))
def test_every_name_loads_the_stage_of_that_name(name):
    cls = stage_class(name)
    assert cls.name == name
    assert set(cls.makes) <= {"keras", "tflite"}
    assert set(cls.needs) <= {"keras", "tflite", ANY_ARTIFACT}


def test_an_unknown_name_says_what_was_meant():
    with pytest.raises(KeyError) as e:
        stage_class("exprot")
    assert e.value.args[0] == ("unknown stage 'exprot' (did you mean \"export\"?); expected one "
                               "of: train, export, profile, report, distill, prune, quantize, "
                               "cluster, lowrank, nas, adapt")


def test_the_fix_for_a_missing_need_names_the_stages_that_make_it():
    assert how_to_make("tflite", "profile") == ("add an export, quantize or adapt stage before "
                                                "profile")
    assert how_to_make("keras", "x") == ("add a train, distill, prune, cluster, lowrank, nas or "
                                         "adapt stage before x")
