"""Registration of the classic-WSSS modules; mmseg's default scope inside each test only."""
import pytest


@pytest.fixture(autouse=True)
def _classic_registered():
    from mmengine.registry import DefaultScope

    import wsss_mmseg.datasets.classic_transforms  # noqa: F401
    import wsss_mmseg.hooks.adversarial_erasing  # noqa: F401
    import wsss_mmseg.models.classic  # noqa: F401
    # nested parts (data preprocessors, backbones) resolve in mmseg's registries; the previous
    # default scopes are restored afterwards, so other test folders see no change
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
