"""The model itself, torch-side: tasks, backbones, the preprocessing spec, the model artifact and
the one forward path. Nothing here imports Ray or MLflow, so it runs on a bare GPU machine.
"""
