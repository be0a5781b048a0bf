// In a web page served from the same origin as the service: send an image File or Blob (from an
// <input type="file">, a drop event or canvas.toBlob) to POST /predict and get the JSON answer.
async function predictFaces(image, baseUrl = "") {
  const form = new FormData();
  form.append("image", image);
  const response = await fetch(`${baseUrl}/predict?min_confidence=0.6`, { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${body.detail}`);
  return body; // body.faces[i]: box {x, y, width, height}, gender {female, male}, label
}
