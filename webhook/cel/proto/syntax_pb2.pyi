import datetime
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import message as _message
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class ParsedExpr(_message.Message):
    __slots__ = ("expr", "source_info")
    EXPR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_INFO_FIELD_NUMBER: _ClassVar[int]
    expr: Expr
    source_info: SourceInfo
    def __init__(self, expr: Expr | _Mapping | None = ..., source_info: SourceInfo | _Mapping | None = ...) -> None: ...

class Expr(_message.Message):
    __slots__ = ("call_expr", "comprehension_expr", "const_expr", "id", "ident_expr", "list_expr", "select_expr", "struct_expr")
    class Ident(_message.Message):
        __slots__ = ("name",)
        NAME_FIELD_NUMBER: _ClassVar[int]
        name: str
        def __init__(self, name: str | None = ...) -> None: ...
    class Select(_message.Message):
        __slots__ = ("field", "operand", "test_only")
        OPERAND_FIELD_NUMBER: _ClassVar[int]
        FIELD_FIELD_NUMBER: _ClassVar[int]
        TEST_ONLY_FIELD_NUMBER: _ClassVar[int]
        operand: Expr
        field: str
        test_only: bool
        def __init__(self, operand: Expr | _Mapping | None = ..., field: str | None = ..., test_only: bool | None = ...) -> None: ...
    class Call(_message.Message):
        __slots__ = ("args", "function", "target")
        TARGET_FIELD_NUMBER: _ClassVar[int]
        FUNCTION_FIELD_NUMBER: _ClassVar[int]
        ARGS_FIELD_NUMBER: _ClassVar[int]
        target: Expr
        function: str
        args: _containers.RepeatedCompositeFieldContainer[Expr]
        def __init__(self, target: Expr | _Mapping | None = ..., function: str | None = ..., args: _Iterable[Expr | _Mapping] | None = ...) -> None: ...
    class CreateList(_message.Message):
        __slots__ = ("elements", "optional_indices")
        ELEMENTS_FIELD_NUMBER: _ClassVar[int]
        OPTIONAL_INDICES_FIELD_NUMBER: _ClassVar[int]
        elements: _containers.RepeatedCompositeFieldContainer[Expr]
        optional_indices: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, elements: _Iterable[Expr | _Mapping] | None = ..., optional_indices: _Iterable[int] | None = ...) -> None: ...
    class CreateStruct(_message.Message):
        __slots__ = ("entries", "message_name")
        class Entry(_message.Message):
            __slots__ = ("field_key", "id", "map_key", "optional_entry", "value")
            ID_FIELD_NUMBER: _ClassVar[int]
            FIELD_KEY_FIELD_NUMBER: _ClassVar[int]
            MAP_KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            OPTIONAL_ENTRY_FIELD_NUMBER: _ClassVar[int]
            id: int
            field_key: str
            map_key: Expr
            value: Expr
            optional_entry: bool
            def __init__(self, id: int | None = ..., field_key: str | None = ..., map_key: Expr | _Mapping | None = ..., value: Expr | _Mapping | None = ..., optional_entry: bool | None = ...) -> None: ...
        MESSAGE_NAME_FIELD_NUMBER: _ClassVar[int]
        ENTRIES_FIELD_NUMBER: _ClassVar[int]
        message_name: str
        entries: _containers.RepeatedCompositeFieldContainer[Expr.CreateStruct.Entry]
        def __init__(self, message_name: str | None = ..., entries: _Iterable[Expr.CreateStruct.Entry | _Mapping] | None = ...) -> None: ...
    class Comprehension(_message.Message):
        __slots__ = ("accu_init", "accu_var", "iter_range", "iter_var", "iter_var2", "loop_condition", "loop_step", "result")
        ITER_VAR_FIELD_NUMBER: _ClassVar[int]
        ITER_VAR2_FIELD_NUMBER: _ClassVar[int]
        ITER_RANGE_FIELD_NUMBER: _ClassVar[int]
        ACCU_VAR_FIELD_NUMBER: _ClassVar[int]
        ACCU_INIT_FIELD_NUMBER: _ClassVar[int]
        LOOP_CONDITION_FIELD_NUMBER: _ClassVar[int]
        LOOP_STEP_FIELD_NUMBER: _ClassVar[int]
        RESULT_FIELD_NUMBER: _ClassVar[int]
        iter_var: str
        iter_var2: str
        iter_range: Expr
        accu_var: str
        accu_init: Expr
        loop_condition: Expr
        loop_step: Expr
        result: Expr
        def __init__(self, iter_var: str | None = ..., iter_var2: str | None = ..., iter_range: Expr | _Mapping | None = ..., accu_var: str | None = ..., accu_init: Expr | _Mapping | None = ..., loop_condition: Expr | _Mapping | None = ..., loop_step: Expr | _Mapping | None = ..., result: Expr | _Mapping | None = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CONST_EXPR_FIELD_NUMBER: _ClassVar[int]
    IDENT_EXPR_FIELD_NUMBER: _ClassVar[int]
    SELECT_EXPR_FIELD_NUMBER: _ClassVar[int]
    CALL_EXPR_FIELD_NUMBER: _ClassVar[int]
    LIST_EXPR_FIELD_NUMBER: _ClassVar[int]
    STRUCT_EXPR_FIELD_NUMBER: _ClassVar[int]
    COMPREHENSION_EXPR_FIELD_NUMBER: _ClassVar[int]
    id: int
    const_expr: Constant
    ident_expr: Expr.Ident
    select_expr: Expr.Select
    call_expr: Expr.Call
    list_expr: Expr.CreateList
    struct_expr: Expr.CreateStruct
    comprehension_expr: Expr.Comprehension
    def __init__(self, id: int | None = ..., const_expr: Constant | _Mapping | None = ..., ident_expr: Expr.Ident | _Mapping | None = ..., select_expr: Expr.Select | _Mapping | None = ..., call_expr: Expr.Call | _Mapping | None = ..., list_expr: Expr.CreateList | _Mapping | None = ..., struct_expr: Expr.CreateStruct | _Mapping | None = ..., comprehension_expr: Expr.Comprehension | _Mapping | None = ...) -> None: ...

class Constant(_message.Message):
    __slots__ = ("bool_value", "bytes_value", "double_value", "duration_value", "int64_value", "null_value", "string_value", "timestamp_value", "uint64_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    UINT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    DURATION_VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: _struct_pb2.NullValue
    bool_value: bool
    int64_value: int
    uint64_value: int
    double_value: float
    string_value: str
    bytes_value: bytes
    duration_value: _duration_pb2.Duration
    timestamp_value: _timestamp_pb2.Timestamp
    def __init__(self, null_value: _struct_pb2.NullValue | str | None = ..., bool_value: bool | None = ..., int64_value: int | None = ..., uint64_value: int | None = ..., double_value: float | None = ..., string_value: str | None = ..., bytes_value: bytes | None = ..., duration_value: datetime.timedelta | _duration_pb2.Duration | _Mapping | None = ..., timestamp_value: datetime.datetime | _timestamp_pb2.Timestamp | _Mapping | None = ...) -> None: ...

class SourceInfo(_message.Message):
    __slots__ = ("extensions", "line_offsets", "location", "macro_calls", "positions", "syntax_version")
    class PositionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: int | None = ..., value: int | None = ...) -> None: ...
    class MacroCallsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: Expr
        def __init__(self, key: int | None = ..., value: Expr | _Mapping | None = ...) -> None: ...
    class Extension(_message.Message):
        __slots__ = ("affected_components", "id", "version")
        class Component(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            COMPONENT_UNSPECIFIED: _ClassVar[SourceInfo.Extension.Component]
            COMPONENT_PARSER: _ClassVar[SourceInfo.Extension.Component]
            COMPONENT_TYPE_CHECKER: _ClassVar[SourceInfo.Extension.Component]
            COMPONENT_RUNTIME: _ClassVar[SourceInfo.Extension.Component]
        COMPONENT_UNSPECIFIED: SourceInfo.Extension.Component
        COMPONENT_PARSER: SourceInfo.Extension.Component
        COMPONENT_TYPE_CHECKER: SourceInfo.Extension.Component
        COMPONENT_RUNTIME: SourceInfo.Extension.Component
        class Version(_message.Message):
            __slots__ = ("major", "minor")
            MAJOR_FIELD_NUMBER: _ClassVar[int]
            MINOR_FIELD_NUMBER: _ClassVar[int]
            major: int
            minor: int
            def __init__(self, major: int | None = ..., minor: int | None = ...) -> None: ...
        ID_FIELD_NUMBER: _ClassVar[int]
        AFFECTED_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
        VERSION_FIELD_NUMBER: _ClassVar[int]
        id: str
        affected_components: _containers.RepeatedScalarFieldContainer[SourceInfo.Extension.Component]
        version: SourceInfo.Extension.Version
        def __init__(self, id: str | None = ..., affected_components: _Iterable[SourceInfo.Extension.Component | str] | None = ..., version: SourceInfo.Extension.Version | _Mapping | None = ...) -> None: ...
    SYNTAX_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LINE_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    MACRO_CALLS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    syntax_version: str
    location: str
    line_offsets: _containers.RepeatedScalarFieldContainer[int]
    positions: _containers.ScalarMap[int, int]
    macro_calls: _containers.MessageMap[int, Expr]
    extensions: _containers.RepeatedCompositeFieldContainer[SourceInfo.Extension]
    def __init__(self, syntax_version: str | None = ..., location: str | None = ..., line_offsets: _Iterable[int] | None = ..., positions: _Mapping[int, int] | None = ..., macro_calls: _Mapping[int, Expr] | None = ..., extensions: _Iterable[SourceInfo.Extension | _Mapping] | None = ...) -> None: ...
