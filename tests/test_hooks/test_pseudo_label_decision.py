"""The decision of PseudoLabelHook on a folder (wsss_mmseg.hooks.pseudo_label_decision), pure."""
import pytest

from wsss_mmseg.hooks import pseudo_label_hook
from wsss_mmseg.hooks.pseudo_label_decision import MODES, decide_action
from wsss_mmseg.pseudo.workdir import WorkDirState

OLD = dict(sha256='old' * 4, settings=dict(generator=dict(type='ClassifierCAMGenerator')))
NEW = dict(sha256='abc' * 4, settings=dict(generator=dict(type='CLIPESGenerator')))


def _state(status, done, total=4, outputs=True, stored=None):
    return WorkDirState(fingerprint_status=status, stored=stored, has_outputs=outputs,
                        done=[f'i{k}' for k in range(done)], total=total)


@pytest.mark.parametrize('state,expected', [
    (_state('match', 4, stored=NEW), 'reuse'),
    (_state('match', 3, stored=NEW), 'resume'),
    (_state('absent', 0, outputs=False), 'generate'),
])
def test_decide_action_auto(state, expected):
    assert decide_action(state, mode='auto', configured=NEW)[0] == expected


def test_auto_never_replaces_labels_of_another_configuration():
    other = _state('differs', 0, stored=OLD)
    with pytest.raises(ValueError) as err:
        decide_action(other, mode='auto', configured=NEW)
    msg = str(err.value)
    assert 'ClassifierCAMGenerator (settings oldoldoldold)' in msg      # what is there
    assert 'CLIPESGenerator (settings abcabcabcabc)' in msg             # what the config makes
    assert "mode='reuse'" in msg and "mode='regenerate'" in msg and 'superseded/' in msg
    for status in ('absent', 'corrupt'):
        with pytest.raises(ValueError, match="settings are unknown.*mode='reuse'"):
            decide_action(_state(status, 0), mode='auto', configured=NEW)
    assert decide_action(other, mode='regenerate', configured=NEW)[0] == 'regenerate'
    action, reason = decide_action(other, mode='reuse', configured=NEW)
    assert action == 'reuse' and 'ClassifierCAMGenerator' in reason
    assert decide_action(_state('absent', 0), mode='reuse', configured=None)[0] == 'reuse'
    with pytest.raises(ValueError, match='mode must be one of'):
        decide_action(other, mode='sometimes', configured=NEW)


# ------------------------------------------------------------ the hook


def test_the_hook_module_exports_the_decision():
    assert pseudo_label_hook.decide_action is decide_action and pseudo_label_hook.MODES is MODES
