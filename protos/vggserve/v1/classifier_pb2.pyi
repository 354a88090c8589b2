from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("encoded", "pixels")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    pixels: RawPixels
    def __init__(self, encoded: _Optional[bytes] = ..., pixels: _Optional[_Union[RawPixels, _Mapping]] = ...) -> None: ...

class RawPixels(_message.Message):
    __slots__ = ("data", "height", "width", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("image", "top_k", "return_probabilities", "model_version", "request_id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    image: Image
    top_k: int
    return_probabilities: bool
    model_version: int
    request_id: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., top_k: _Optional[int] = ..., return_probabilities: _Optional[bool] = ..., model_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "label", "probability")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    probability: float
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("classes", "probabilities", "model_name", "model_version")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    model_name: str
    model_version: int
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., probabilities: _Optional[_Iterable[float]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("images", "top_k", "return_probabilities", "model_version")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    return_probabilities: bool
    model_version: int
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., return_probabilities: _Optional[bool] = ..., model_version: _Optional[int] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ClassifyResponse
    error: ImageError
    def __init__(self, response: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., error: _Optional[_Union[ImageError, _Mapping]] = ...) -> None: ...

class ImageError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ("request_id", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    result: ImageResult
    def __init__(self, request_id: _Optional[str] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("image", "top_k", "model_version", "class_index")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    image: Image
    top_k: int
    model_version: int
    class_index: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., top_k: _Optional[int] = ..., model_version: _Optional[int] = ..., class_index: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("classification", "class_index", "label", "heatmap_png", "overlay_png")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    classification: ClassifyResponse
    class_index: int
    label: str
    heatmap_png: bytes
    overlay_png: bytes
    def __init__(self, classification: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., class_index: _Optional[int] = ..., label: _Optional[str] = ..., heatmap_png: _Optional[bytes] = ..., overlay_png: _Optional[bytes] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("model_name", "versions", "default_version", "labels", "input_height", "input_width", "preprocessing_json", "signatures", "max_batch_size")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    default_version: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    input_height: int
    input_width: int
    preprocessing_json: str
    signatures: _containers.RepeatedScalarFieldContainer[str]
    max_batch_size: int
    def __init__(self, model_name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., default_version: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., preprocessing_json: _Optional[str] = ..., signatures: _Optional[_Iterable[str]] = ..., max_batch_size: _Optional[int] = ...) -> None: ...
