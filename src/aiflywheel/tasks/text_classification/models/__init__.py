"""Text classifiers: a TF-IDF baseline, frozen-encoder heads and fine-tuned encoders.

Every classifier follows fit / predict_proba / predict / save / load; ``load_classifier``
reads any of them back from the folder ``save`` wrote (safetensors and JSON, no pickle).
"""
