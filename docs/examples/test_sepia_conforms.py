import pixmill_sepia

from pixmill.testing import assert_conforms


def test_conforms():
    assert_conforms(pixmill_sepia)  # or check_plugin(pixmill_sepia) for the report
