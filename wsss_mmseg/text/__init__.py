"""Text side of the CLIP access layer: vocabularies, prompts and text embeddings.

* :mod:`.vocab` -- class-name tables, synonym sets, background words and template
  sets shipped as JSON in ``wsss_mmseg/text/data`` (+ class-name resolution).
* :mod:`.prompts` -- prompt building; sentence-level synonym fusion (CLIP-ES) and
  split-synonym rows with a max over each class's rows (SCLIP).
* :mod:`.encoder` -- normalise-mean-normalise prompt-ensemble embeddings.
* :mod:`.feature_cache` -- the on-disk text-feature cache keyed by weights identity,
  model definition, sentences, tokenizer and dtype (reruns, resumes and other ranks
  load the embeddings instead of recomputing them).

Importable with torch (+ a CLIP implementation for the caller); no mmseg/mmengine.
"""
from .encoder import (RECIPE, CacheKey, TextEmbeddingCache, class_embeddings,
                      encode_class_texts, mean_of_normalised, normalise_rows,
                      resolve_background, resolve_class_texts, resolve_templates,
                      synonym_row_embeddings, weights_fingerprint)
from .feature_cache import (clear_text_cache, default_text_cache_dir, model_definition_id,
                            shared_text_cache, tokenizer_identity)
from .prompts import (SynonymExpansion, apply_synonyms, build_prompts, expand_synonyms,
                      max_over_synonyms)
from .vocab import (DATA_DIR, background_words, check_template, class_names, list_tables,
                    load_name_file, resolve_alias, resolve_classes, synonyms, table_info,
                    templates)

__all__ = [
    'RECIPE', 'CacheKey', 'TextEmbeddingCache', 'class_embeddings', 'encode_class_texts',
    'mean_of_normalised', 'normalise_rows', 'resolve_background', 'resolve_class_texts',
    'resolve_templates', 'synonym_row_embeddings', 'weights_fingerprint',
    'clear_text_cache', 'default_text_cache_dir', 'model_definition_id', 'shared_text_cache',
    'tokenizer_identity',
    'SynonymExpansion', 'apply_synonyms', 'build_prompts', 'expand_synonyms',
    'max_over_synonyms', 'DATA_DIR', 'background_words', 'check_template', 'class_names',
    'list_tables', 'load_name_file', 'resolve_alias', 'resolve_classes', 'synonyms',
    'table_info', 'templates',
]
