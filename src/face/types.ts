/**
 * What the face stage tells the engines about one frame. (Starter definition from the foundation; the
 * face-tracking work owns and extends it.)
 */
export interface FaceBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface FaceObservation {
  /** True when no face was found in this frame; the other fields then hold the last known values or zeros. */
  lost: boolean;
  /** 478 points (468 mesh + 5 + 5 iris) as x, y in image pixels and z in the mesh's relative depth units. */
  landmarks: Float32Array;
  confidence: number;
  box: FaceBox;
  frameWidth: number;
  frameHeight: number;
}
