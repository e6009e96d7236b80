"""Install wsss_mmseg.

The mmseg family (upstream ``mmsegmentation``/``mmcv``/``mmengine`` or the maintained
``onedl-*`` continuation) is deliberately NOT a hard requirement: both install into the
same import names, and listing one would make pip pull it next to the other. Pick a
stack with ``requirements/upstream.txt`` or ``requirements/onedl.txt``.
"""
from setuptools import find_packages, setup


def _version() -> str:
    ns: dict = {}
    with open('wsss_mmseg/version.py') as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='wsss_mmseg',
    version=_version(),
    description='Weakly supervised semantic segmentation with frozen CLIP '
                'pseudo labels, as an mmsegmentation 1.x plugin',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['wsss_mmseg', 'wsss_mmseg.*']),
    package_data={'wsss_mmseg': ['text/data/*.json']},
    include_package_data=True,
    install_requires=[
        'numpy',
        'open_clip_torch>=2.24',
        'ftfy',
        'regex',
        'pillow',
    ],
    extras_require={
        'crf': ['pydensecrf2'],
        'tests': ['pytest'],
    },
    entry_points={
        'console_scripts': [
            'wsss-mmseg=wsss_mmseg.__main__:main',
        ],
    },
    license='Apache-2.0',
    zip_safe=False,
)
