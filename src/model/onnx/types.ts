/** Element types, dims and value descriptions shared by the ONNX graph builder and writers. */

/** Tensor element types the builder emits (names as onnxruntime-common spells them, plus float16). */
export type ElemType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

/** TensorProto.DataType codes. */
export const ELEM_TYPE_CODE: Record<ElemType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
};

export const ELEM_BYTES: Record<ElemType, number> = {
  float32: 4,
  float16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export function elemTypeFromCode(code: number): ElemType {
  for (const [k, v] of Object.entries(ELEM_TYPE_CODE)) if (v === code) return k as ElemType;
  throw new Error(`unsupported ONNX tensor element type code ${code}`);
}

/** A dimension: a fixed size, or a symbolic name (dynamic axis) such as 'B'. */
export type Dim = number | string;

/** A graph input or output: name, element type, shape. */
export interface ValueSpec {
  name: string;
  type: ElemType;
  shape: Dim[];
}

export function numelOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}
