"""Public path of the pseudo-mask evaluation, which lives next to the job (:mod:`wsss_mmseg.pseudo.evaluate`)."""
from ..pseudo.evaluate import *  # noqa: F401,F403
from ..pseudo.evaluate import __all__  # noqa: F401
