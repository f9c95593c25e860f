"""What a training pipeline and an MLflow user do, run in MLflow's own Python environment (.deps/mlflow) by
test_mlflow.py: log ONNX models to the registry with `mlflow.onnx.log_model`, and set aliases and tags with
`MlflowClient`. Reads a JSON list of steps on stdin; prints one JSON line per step.

Steps:
  {"log": NAME, "onnx": PATH, "scale": S, "config": PATH?}   logs PATH (its float weights times S) as a new version
  {"alias": ALIAS, "model": NAME, "version": V}               points ALIAS at version V
  {"model_tag": KEY, "model": NAME, "value": VALUE}           sets a registered-model tag
  {"version_tag": KEY, "model": NAME, "version": V, "value": VALUE}
"""

import json
import sys

import mlflow
import numpy as np
import onnx
from mlflow import MlflowClient
from onnx import numpy_helper


def scaled(path, scale):
    model = onnx.load(path)  # a fresh proto each time: log_model rewrites it for external data
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array((w * scale).astype(np.float32), init.name))
    return model


def main():
    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.set_experiment("inferd-tests")
    client = MlflowClient()
    for step in json.load(sys.stdin):
        if "log" in step:
            with mlflow.start_run():
                info = mlflow.onnx.log_model(
                    scaled(step["onnx"], step.get("scale", 1.0)),
                    name="model",
                    registered_model_name=step["log"],
                    extra_files=[step["config"]] if step.get("config") else None,
                )
            print(json.dumps({"version": str(info.registered_model_version)}), flush=True)
        elif "alias" in step:
            client.set_registered_model_alias(step["model"], step["alias"], str(step["version"]))
            print(json.dumps({"ok": True}), flush=True)
        elif "model_tag" in step:
            client.set_registered_model_tag(step["model"], step["model_tag"], step["value"])
            print(json.dumps({"ok": True}), flush=True)
        elif "version_tag" in step:
            client.set_model_version_tag(step["model"], str(step["version"]), step["version_tag"], step["value"])
            print(json.dumps({"ok": True}), flush=True)


if __name__ == "__main__":
    main()
