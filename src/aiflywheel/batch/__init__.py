"""Batch prediction over files (``flywheel predict FEATURE --input FILE --output FILE``).

``predict.predict_file`` is the stage; ``tables`` reads and writes CSV / TSV, JSON Lines
and Parquet a chunk at a time.
"""
