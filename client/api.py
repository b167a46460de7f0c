"""A small typed client over ``tritonclient`` for the toolkit's text ensembles and engines.

gRPC by default, HTTP as an option. Errors reach the user as one line: a server that does not
answer names its URL and ``make serve``; an unknown model lists the models the server has.
Only ``UNAVAILABLE`` answers are retried, with exponential backoff.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import numpy as np

from toolkit.environment import gpu_present
from toolkit.errors import BadInputError, DependencyMissingError, ServerError
from toolkit.names import ATTENTION_MASK, INPUT_IDS, TEXT, TOKEN_TYPE_IDS

Protocol = Literal["grpc", "http"]
SharedMemory = Literal["none", "system", "cuda"]
Tensors = dict[str, np.ndarray]
DEFAULT_URL: dict[str, str] = {"grpc": "localhost:8001", "http": "localhost:8000"}
_T = TypeVar("_T")


class _Unavailable(Exception):
    """Internal: the server did not answer (connection refused, UNAVAILABLE, HTTP 503)."""


def _is_unavailable(error: Exception) -> bool:
    """Whether an exception from tritonclient means 'server not reachable' (the only retried kind)."""
    if isinstance(error, OSError):  # HTTP client: connection refused / reset
        return True
    status = getattr(error, "status", None)
    code = status() if callable(status) else None
    return code in {"StatusCode.UNAVAILABLE", "503"}


class TritonTextClient:
    """Typed access to a Triton server: text ensembles, engines on token ids, many requests at once.

    Args:
        url: ``host:port``; defaults to the protocol's standard port on localhost.
        protocol: ``"grpc"`` or ``"http"``.
        timeout_s: per-request timeout in seconds.
        retries: how many times an ``UNAVAILABLE`` answer is retried (0 = no retry).
        backoff_s: first wait between retries; doubles each time.
    """

    def __init__(
        self,
        url: str | None = None,
        protocol: Protocol = "grpc",
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if protocol not in DEFAULT_URL:
            raise BadInputError(f"protocol {protocol!r} is not one of grpc, http; pass --protocol grpc or http")
        if retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise BadInputError(
                f"retries={retries}, timeout_s={timeout_s}, backoff_s={backoff_s}: need retries >= 0, timeout_s > 0, backoff_s >= 0"
            )
        self.url = url or DEFAULT_URL[protocol]
        self.protocol: Protocol = protocol
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._local = threading.local()  # one tritonclient object per thread: the HTTP one is not thread-safe
        self._metadata: dict[str, dict[str, Any]] = {}
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            module = self._module()
            if self.protocol == "grpc":
                client = module.InferenceServerClient(self.url)
            else:
                client = module.InferenceServerClient(self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _down_error(self, cause: Exception | None = None) -> ServerError:
        detail = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
        return ServerError(
            f"Triton server at {self.url} ({self.protocol}) does not answer{detail}; start it with `make serve` or pass --url"
        )

    def _call(self, action: Callable[[Any], _T], what: str = "request") -> _T:
        """Run ``action(tritonclient)`` retrying ``UNAVAILABLE`` with backoff.

        A server that stays unavailable, and any other error the server answers, become
        :class:`ServerError` with one line saying ``what`` failed; errors of this code pass through.
        """
        from tritonclient.utils import InferenceServerException

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return action(self._client())
            except Exception as error:
                if not _is_unavailable(error):
                    if isinstance(error, InferenceServerException):
                        message = str(error).splitlines()[0] if str(error) else repr(error)
                        raise ServerError(f"{what} at {self.url} failed: {message}") from error
                    raise
                if attempt == self.retries:
                    raise self._down_error(error) from error
                self._local.client = None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- server and models ----------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Whether the server answers and reports ready (no retry, never raises)."""
        try:
            return bool(self._client().is_server_ready())
        except Exception:
            self._local.client = None
            return False

    def require_ready(self) -> None:
        """Raise :class:`ServerError` (after retries) unless the server is ready."""
        try:
            ready = self._call(lambda c: c.is_server_ready())
        except (ServerError, ImportError):  # a missing tritonclient is not a server that does not answer
            raise
        except Exception as error:
            raise self._down_error(error) from error
        if not ready:
            raise self._down_error()

    def list_models(self, ready_only: bool = True) -> list[str]:
        """Names of the models in the server's repository (only the loaded ones by default)."""
        if self.protocol == "grpc":
            index = self._call(lambda c: c.get_model_repository_index(as_json=True)).get("models", [])
        else:
            index = self._call(lambda c: c.get_model_repository_index())
        return sorted({m["name"] for m in index if not ready_only or m.get("state", "READY") == "READY"})

    def require_model(self, model: str) -> None:
        """Raise :class:`BadInputError` listing the available models unless ``model`` is ready."""
        if model in self._checked:
            return
        self.require_ready()
        if not self._call(lambda c: c.is_model_ready(model)):
            available = ", ".join(self.list_models()) or "none"
            raise BadInputError(f"model {model!r} is not ready on the server at {self.url}; available: {available}")
        with self._lock:
            self._checked.add(model)

    def metadata(self, model: str) -> dict[str, Any]:
        """Model metadata as a dict: ``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``."""
        if model not in self._metadata:
            self.require_model(model)
            if self.protocol == "grpc":
                meta = self._call(lambda c: c.get_model_metadata(model, as_json=True))
            else:
                meta = self._call(lambda c: c.get_model_metadata(model))
            with self._lock:
                self._metadata[model] = meta
        return self._metadata[model]

    def input_names(self, model: str) -> list[str]:
        """The model's input tensor names, in the order its metadata gives them."""
        return [tensor["name"] for tensor in self.metadata(model)["inputs"]]

    def output_names(self, model: str) -> list[str]:
        """The model's output tensor names, in the order its metadata gives them."""
        return [tensor["name"] for tensor in self.metadata(model)["outputs"]]

    # -- inference ------------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        shared_memory: SharedMemory = "none",
    ) -> Tensors:
        """Run one request; returns every requested output (all of the model's by default) as numpy.

        ``shared_memory="system"`` passes the inputs through POSIX shared memory (server on this
        host); ``"cuda"`` is accepted only when a GPU is present.
        """
        names = list(outputs) if outputs is not None else self.output_names(model)
        self.require_model(model)
        module = self._module()
        from tritonclient.utils import np_to_triton_dtype

        with self._shared_inputs(inputs, shared_memory) as regions:
            infer_inputs = []
            for name, array in inputs.items():
                tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                if name in regions:
                    tensor.set_shared_memory(regions[name], array.nbytes)
                else:
                    tensor.set_data_from_numpy(array)
                infer_inputs.append(tensor)
            requested = [module.InferRequestedOutput(name) for name in names]

            def send(client: Any) -> Any:
                if self.protocol == "grpc":
                    return client.infer(model, infer_inputs, outputs=requested, client_timeout=self.timeout_s)
                return client.infer(model, infer_inputs, outputs=requested)

            result = self._call(send, f"inference on {model!r}")
        return {name: result.as_numpy(name) for name in names}

    def infer_text(self, model: str, texts: Sequence[str], outputs: Sequence[str] | None = None) -> Tensors:
        """Send raw texts to a text ensemble (input ``TEXT``, BYTES ``[batch, 1]``)."""
        if not texts:
            raise BadInputError("no text given; pass at least one string")
        batch = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        return self.infer(model, {TEXT: batch}, outputs)

    def infer_ids(
        self,
        model: str,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        outputs: Sequence[str] | None = None,
        shared_memory: SharedMemory = "none",
    ) -> Tensors:
        """Send token tensors (INT64 ``[batch, seq]``) to an engine model."""
        inputs = ids_inputs(input_ids, attention_mask, token_type_ids)
        return self.infer(model, inputs, outputs, shared_memory=shared_memory)

    def infer_many(
        self,
        model: str,
        requests: Sequence[Mapping[str, np.ndarray]],
        concurrency: int = 4,
        outputs: Sequence[str] | None = None,
        shared_memory: SharedMemory = "none",
        progress: bool = True,
        timings: list[float] | None = None,
    ) -> list[Tensors]:
        """Run many requests from ``concurrency`` threads (tqdm bar); results keep the requests' order. Each
        request's round trip in seconds is appended to ``timings`` when given (in the order they finish)."""
        if concurrency < 1:
            raise BadInputError(f"concurrency={concurrency}: need at least 1; pass --concurrency 1 or more")
        from tqdm import tqdm

        self.require_model(model)

        def timed(request: Mapping[str, np.ndarray]) -> Tensors:
            start = time.perf_counter()
            result = self.infer(model, request, outputs, shared_memory)
            if timings is not None:
                timings.append(time.perf_counter() - start)
            return result

        with (
            ThreadPoolExecutor(max_workers=concurrency) as pool,
            tqdm(total=len(requests), desc=model, disable=not progress, unit="req") as bar,
        ):
            futures = [pool.submit(timed, request) for request in requests]
            results = []
            for future in futures:
                results.append(future.result())
                bar.update(1)
        return results

    # -- shared memory --------------------------------------------------------------------------

    @contextmanager
    def _shared_inputs(self, inputs: Mapping[str, np.ndarray], kind: SharedMemory) -> Iterator[dict[str, str]]:
        """Place numeric inputs in registered shared-memory regions; yields ``{input: region}``."""
        if kind == "none":
            yield {}
            return
        if kind not in ("system", "cuda"):
            raise BadInputError(f"shared_memory={kind!r} is not one of none, system, cuda")
        if kind == "cuda" and not gpu_present():
            raise BadInputError("shared_memory='cuda' needs an NVIDIA GPU and none is present; use 'system'")
        regions: dict[str, str] = {}
        cleanups: list[Callable[[], None]] = []
        try:
            for name, array in inputs.items():
                if array.dtype == np.object_:
                    continue  # BYTES tensors go inline
                region = f"tk_{uuid.uuid4().hex[:16]}"
                place = self._system_region if kind == "system" else self._cuda_region
                cleanups.append(place(region, np.ascontiguousarray(array)))
                regions[name] = region
            yield regions
        finally:
            for cleanup in reversed(cleanups):
                cleanup()

    def _system_region(self, region: str, array: np.ndarray) -> Callable[[], None]:
        """Copy ``array`` into a new POSIX shm segment, register it; returns the cleanup."""
        from multiprocessing import shared_memory

        # stdlib POSIX shm: tritonclient.utils.shared_memory imports pkg_resources, gone from new setuptools
        segment = shared_memory.SharedMemory(name=region, create=True, size=max(array.nbytes, 1))
        np.ndarray(array.shape, array.dtype, buffer=segment.buf)[...] = array

        def cleanup() -> None:
            try:
                self._call(lambda c: c.unregister_system_shared_memory(region))
            finally:
                segment.close()
                segment.unlink()

        try:
            self._call(lambda c: c.register_system_shared_memory(region, "/" + region, array.nbytes))
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        return cleanup

    def _cuda_region(self, region: str, array: np.ndarray, device_id: int = 0) -> Callable[[], None]:
        """Copy ``array`` into a new CUDA shm region on GPU ``device_id``, register it; returns the cleanup."""
        try:
            import tritonclient.utils.cuda_shared_memory as cudashm
        except ImportError as error:
            raise DependencyMissingError(
                f"CUDA shared memory needs {error.name or 'cuda-python'}: "
                "pip install cuda-python 'setuptools<81', or use shared_memory='system'"
            ) from error
        handle = cudashm.create_shared_memory_region(region, array.nbytes, device_id)

        def cleanup() -> None:
            try:
                self._call(lambda c: c.unregister_cuda_shared_memory(region))
            finally:
                cudashm.destroy_shared_memory_region(handle)

        try:
            cudashm.set_shared_memory_region(handle, [array])
            raw = cudashm.get_raw_handle(handle)
            self._call(lambda c: c.register_cuda_shared_memory(region, raw, device_id, array.nbytes))
        except BaseException:
            cudashm.destroy_shared_memory_region(handle)
            raise
        return cleanup


def ids_inputs(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> Tensors:
    """Validate token tensors (same 2-D shape) and return them as INT64 engine inputs."""
    arrays = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}
    if token_type_ids is not None:
        arrays[TOKEN_TYPE_IDS] = token_type_ids
    shape = np.shape(input_ids)
    for name, array in arrays.items():
        if np.ndim(array) != 2 or np.shape(array) != shape:
            raise BadInputError(f"{name} has shape {np.shape(array)}; every token tensor must be [batch, seq] like input_ids {shape}")
    return {name: np.ascontiguousarray(array, dtype=np.int64) for name, array in arrays.items()}
