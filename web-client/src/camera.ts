/**
 * Opening the camera, for the main page and the bench tab: a secure page is checked first, and every way
 * getUserMedia fails becomes a message that says what to do.
 */

/** The camera as a MediaStream; `exact` asks for exactly this size (the bench), else `video` are ideals. */
export async function openCamera(video: MediaTrackConstraints, exact?: { width: number; height: number }): Promise<MediaStream> {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new Error('The camera needs a secure page: open this site over https (start the server with --tls-cert and --tls-key) or on http://localhost.');
  }
  try {
    const size = exact ? { width: { exact: exact.width }, height: { exact: exact.height } } : {};
    return await navigator.mediaDevices.getUserMedia({ video: { ...video, ...size }, audio: false });
  } catch (err) {
    const name = (err as DOMException).name;
    if (name === 'NotAllowedError' || name === 'SecurityError') {
      throw new Error('Camera access was denied. Allow the camera for this site in the browser (the camera icon in the address bar), then press Start again.');
    }
    if (name === 'OverconstrainedError' && exact) throw new Error(`The camera cannot deliver ${exact.width}x${exact.height}.`);
    if (name === 'NotFoundError' || name === 'OverconstrainedError') throw new Error('No camera was found. Connect a camera and press Start again.');
    if (name === 'NotReadableError' || name === 'AbortError') throw new Error('The camera is in use by another application or could not be started.');
    throw new Error(`The camera could not be opened: ${(err as Error).message}`);
  }
}
