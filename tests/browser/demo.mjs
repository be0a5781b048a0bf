// Drives the demo page and the fetch example in a real headless Chromium; prints what it saw as JSON.
// Usage: node demo.mjs BASE_URL CHROMIUM PHOTO SCREENSHOT EXAMPLE_JS
// The assertions live in test_demo_page.py; this script only observes.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, executablePath, photo, screenshot, example] = process.argv.slice(2);
const seen = {};
const browser = await chromium.launch({ executablePath });
try {
  const page = await browser.newPage({ viewport: { width: 700, height: 1000 } });
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  await page.goto(`${base}/`);

  // A photo: wait for the service's answer and the boxes drawn from it.
  await page.setInputFiles("#file", photo);
  await page.waitForSelector("body[data-state=done]", { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("photo").complete);
  seen.status = await page.textContent("#status");
  seen.labels = await page.$$eval(".box", (boxes) => boxes.map((b) => b.classList[1]));
  seen.tags = await page.$$eval(".box span", (tags) => tags.map((t) => t.textContent));
  seen.json = JSON.parse(await page.textContent("#json"));
  const photoRect = await page.$eval("#photo", (img) => img.getBoundingClientRect().toJSON());
  seen.photo = { ...photoRect, naturalWidth: await page.$eval("#photo", (img) => img.naturalWidth) };
  seen.boxes = await page.$$eval(".box", (boxes) => boxes.map((b) => b.getBoundingClientRect().toJSON()));
  await page.screenshot({ path: screenshot, fullPage: true });

  // The slider: at 1.0 every face falls below min_confidence and is labelled uncertain.
  await page.fill("#min-confidence", "1");
  await page.waitForFunction(() => document.getElementById("json").textContent.includes("uncertain"));
  await page.waitForSelector("body[data-state=done]");
  seen.sliderLabels = await page.$$eval(".box", (boxes) => boxes.map((b) => b.classList[1]));

  // A file that is not an image: the service's detail is shown, no boxes remain.
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await page.waitForSelector("body[data-state=error]", { timeout: 30000 });
  seen.error = await page.textContent("#error");
  seen.errorVisible = await page.isVisible("#error");
  seen.boxesAfterError = await page.$$eval(".box", (boxes) => boxes.length);

  // Drag and drop: the same photo dropped on the drop zone.
  const bytes = readFileSync(photo).toString("base64");
  const dropped = await page.evaluateHandle((b64) => {
    const data = new DataTransfer();
    const content = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    data.items.add(new File([content], "dropped.jpg", { type: "image/jpeg" }));
    return data;
  }, bytes);
  await page.dispatchEvent("#drop", "drop", { dataTransfer: dropped });
  await page.waitForSelector("body[data-state=done]", { timeout: 30000 });
  seen.droppedLabels = await page.$$eval(".box", (boxes) => boxes.map((b) => b.classList[1]));

  // The fetch example of docs/usage.md (examples/predict.js), as a page on the service's origin would run it.
  await page.addScriptTag({ content: readFileSync(example, "utf8") });
  seen.example = await page.evaluate(async (b64) => {
    const blob = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: "image/jpeg" });
    return predictFaces(blob);
  }, bytes);
  seen.exampleError = await page.evaluate(() => predictFaces(new Blob(["nope"])).catch((err) => err.message));
  seen.pageErrors = pageErrors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
