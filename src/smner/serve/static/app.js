// smner page: post -> /v1/predict -> highlighted entities -> attention heatmap over the image
// each entity was found in (a post may have several images).
// Plain JS, no dependencies, nothing loaded from other hosts.
"use strict";

(() => {
  // Light tints, dark text on top stays readable (WCAG AA); the type is also written out.
  const PALETTE = ["#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc",
    "#d9f99d", "#e5e7eb"];
  const HEAT_OPACITY = 0.6;
  const MAX_CANVAS_SIDE = 640;
  const BOX_COLOUR = "rgb(0, 230, 255)";  // the entity's box: cyan, apart from the heat map
  const MIN_CANVAS_SIDE = 320; // small images are scaled up, so that the grid stays visible

  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("post-form"), text: $("post-text"), file: $("post-image"), preview: $("preview"),
    previews: $("previews"), maxImages: $("max-images"),
    button: $("predict"), status: $("status"), error: $("error"), modelInfo: $("model-info"),
    results: $("results"), legend: $("legend"), highlighted: $("highlighted"),
    imageStatus: $("image-status"), noEntities: $("no-entities"), list: $("entity-list"),
    chooseHint: $("choose-hint"),
    explain: $("explain"), caption: $("explain-caption"), canvas: $("heatmap"),
  };
  // images: the sent images as the browser decoded them (null where it cannot), in order;
  // imagesSent: how many were sent.
  const state = {
    colours: new Map(), labels: [], previewUrls: [], maxRequestBytes: Infinity,
    maxImages: Infinity, result: null, text: "", images: [], imagesSent: 0,
  };

  function colourOf(type) {
    if (!state.colours.has(type)) {
      state.colours.set(type, PALETTE[state.colours.size % PALETTE.length]);
    }
    return state.colours.get(type);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function swatch(type) {
    const node = element("span", "swatch");
    node.setAttribute("aria-hidden", "true");
    node.style.setProperty("--entity-colour", colourOf(type));
    return node;
  }

  function renderLegend() {
    const types = [...state.labels];
    for (const e of state.result ? state.result.entities : []) {
      if (!types.includes(e.type)) types.push(e.type);
    }
    els.legend.replaceChildren(...types.map((type) => {
      const item = element("li");
      item.append(swatch(type), type);
      return item;
    }));
  }

  async function loadModelInfo() {
    try {
      const response = await fetch("/v1/model", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const info = await response.json();
      state.labels = info.labels;
      info.labels.forEach(colourOf);
      const image = info.use_image ? `image encoder ${info.image_encoder}` : "text only";
      els.modelInfo.textContent = `Model: ${info.type} · types ${info.labels.join(", ")} · ` +
        `text encoder ${info.text_encoder} · ${image} · smner ${info.version}`;
      els.text.maxLength = info.limits.max_text_chars;
      state.maxRequestBytes = info.limits.max_request_bytes;
      state.maxImages = info.limits.max_images_per_post || 1;
      els.file.multiple = state.maxImages > 1;
      els.maxImages.textContent = state.maxImages > 1 ? `; up to ${state.maxImages}` : "; one";
    } catch (error) {
      els.modelInfo.textContent = `Could not load the model information (${error.message}).`;
    }
  }

  function setStatus(message) { els.status.textContent = message; }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }

  function describeError(status, body) {
    if (!body || typeof body.error !== "string") return `The server answered HTTP ${status}.`;
    let detail = "";
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg || d).join("; ");
    else if (body.detail && typeof body.detail === "object") {
      // {"image": 1, ...}: the error is about the second image of the post (counted from 0)
      const { image, ...rest } = body.detail;
      const words = plainWords(rest);
      detail = Number.isInteger(image) ? `image ${image + 1}${words ? `; ${words}` : ""}` : words;
    } else if (body.detail) detail = String(body.detail);
    return `Error: ${body.error}${detail ? ` (${detail})` : ""}.`;
  }

  // {"formats": ["JPEG", "PNG"], "max_chars": 5} -> "formats: JPEG, PNG; max chars: 5"
  function plainWords(detail) {
    return Object.entries(detail).map(([key, value]) => {
      const shown = Array.isArray(value) ? value.join(", ") : String(value);
      return `${key.replace(/_/g, " ")}: ${shown}`;
    }).join("; ");
  }

  // A chosen file the page will not send: not an image by its type.
  function notAnImage(file) {
    return file && file.type && !file.type.startsWith("image/")
      ? `“${file.name}” is not an image: choose a JPEG, PNG, GIF, WebP, BMP or TIFF file.`
      : null;
  }

  // Why the chosen files will not be sent, or null: a file that is not an image, or more
  // images than the server takes in a post.
  function refusedFiles(files) {
    for (const file of files) {
      const refused = notAnImage(file);
      if (refused) return refused;
    }
    if (files.length > state.maxImages) {
      return state.maxImages === 1
        ? "This model takes one image a post: choose one."
        : `This server takes at most ${state.maxImages} images a post: choose fewer.`;
    }
    return null;
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
      reader.onerror = () => reject(reader.error || new Error("could not read the file"));
      reader.readAsDataURL(file);
    });
  }

  // The image as the browser shows it (EXIF orientation applied, as the server does); null when
  // the browser cannot decode it (e.g. TIFF): the prediction still works, the heatmap does not.
  async function loadImage(file) {
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.src = url;
    try {
      await image.decode();
      return image;
    } catch {
      return null;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  // The first image previews in #preview, the others in images added after it.
  function hidePreviews() {
    for (const url of state.previewUrls) URL.revokeObjectURL(url);
    state.previewUrls = [];
    els.preview.hidden = true;
    els.preview.removeAttribute("src");
    for (const node of [...els.previews.children]) if (node !== els.preview) node.remove();
  }

  // Each preview appears only once the browser has decoded its image: never a broken icon.
  function onFileChange() {
    els.error.hidden = true;
    hidePreviews();
    const files = [...els.file.files];
    if (!files.length) return;
    const refused = refusedFiles(files);
    if (refused) {
      showError(refused);
      return;
    }
    files.forEach((file, i) => {
      const preview = i === 0 ? els.preview : element("img", "preview");
      if (i > 0) {
        preview.hidden = true;
        preview.alt = `Preview of image ${i + 1}`;
        preview.addEventListener("load", onPreviewLoad);
        preview.addEventListener("error", onPreviewError);
        els.previews.append(preview);
      }
      if (files.length > 1) preview.title = `Image ${i + 1}: ${file.name}`;
      else preview.removeAttribute("title");
      const url = URL.createObjectURL(file);
      state.previewUrls.push(url);
      preview.src = url;
    });
  }

  function onPreviewLoad(event) { event.target.hidden = false; }

  function onPreviewError(event) {
    event.target.hidden = true;
    event.target.removeAttribute("src");
    if (els.file.files.length) {
      const which = els.file.files.length > 1 ? "one of the chosen images" : "the chosen image";
      setStatus(`This browser cannot show ${which}; the server may still read it.`);
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    els.error.hidden = true;
    const text = els.text.value;
    if (!text.trim()) {
      setStatus("");
      showError("Write the text of a post first.");
      els.text.focus();
      return;
    }
    const files = [...els.file.files];
    const refused = refusedFiles(files);
    if (refused) {
      setStatus("");
      showError(refused);
      return;
    }
    const bytes = files.reduce((sum, file) => sum + Math.ceil(file.size / 3) * 4 + 3, 0);
    if (files.length && bytes + 4 * text.length + 64 > state.maxRequestBytes) {
      setStatus("");
      const limit = (state.maxRequestBytes / 2 ** 20).toFixed(1);
      const what = files.length > 1 ? "The images are" : "The image is";
      showError(`${what} too large to send: requests are limited to ${limit} MiB.`);
      return;
    }
    els.button.disabled = true;
    els.form.setAttribute("aria-busy", "true");
    setStatus("Predicting…");
    try {
      // One image is sent as "image" (the one-image answer); several as the list "images".
      const body = { text };
      if (files.length === 1) body.image = await readBase64(files[0]);
      else if (files.length > 1) body.images = await Promise.all(files.map(readBase64));
      const [response, images] = await Promise.all([
        fetch("/v1/predict", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify(body),
        }),
        Promise.all(files.map(loadImage)),
      ]);
      let data = null;
      try { data = await response.json(); } catch { /* not JSON: reported below */ }
      if (!response.ok || !data) {
        setStatus("");
        showError(describeError(response.status, data));
        return;
      }
      Object.assign(state, { result: data, text, images, imagesSent: files.length });
      renderResult();
      const n = data.entities.length;
      setStatus(`Found ${n} ${n === 1 ? "entity" : "entities"}.`);
    } catch (error) {
      setStatus("");
      showError(`The request failed: ${error.message}`);
    } finally {
      els.button.disabled = false;
      els.form.removeAttribute("aria-busy");
    }
  }

  function entityButton(entity, index, surface) {
    const button = element("button", "entity");
    button.type = "button";
    button.dataset.index = String(index);
    button.dataset.type = entity.type;
    button.setAttribute("aria-pressed", "false");
    button.title = `${entity.type}, score ${entity.score.toFixed(2)}: show its attention`;
    button.style.setProperty("--entity-colour", colourOf(entity.type));
    button.append(surface, element("span", "entity-tag", entity.type));
    return button;
  }

  // A post sent with a list of images: each entity names the one it was found in.
  function isListed() { return Array.isArray(state.result.image_statuses); }

  function listItem(entity, index) {
    const button = element("button", "entity-item");
    button.type = "button";
    button.dataset.index = String(index);
    button.setAttribute("aria-pressed", "false");
    button.append(
      swatch(entity.type),
      element("span", "entity-text", entity.text),
      element("span", "entity-type", entity.type),
      element("span", "entity-score", `score ${entity.score.toFixed(2)}`),
    );
    if (isListed() && Number.isInteger(entity.image_index)) {
      button.append(element("span", "entity-image", `image ${entity.image_index + 1}`));
    }
    const item = element("li");
    item.append(button);
    return item;
  }

  function renderResult() {
    const { result, text } = state;
    // Offsets count Unicode code points (Python), not UTF-16 units: index an array of them.
    const chars = Array.from(text);
    const order = result.entities.map((_, i) => i)
      .sort((a, b) => result.entities[a].char_start - result.entities[b].char_start);
    const parts = [];
    let cursor = 0;
    for (const i of order) {
      const entity = result.entities[i];
      if (entity.char_start < cursor) continue; // overlapping span: shown in the list only
      parts.push(chars.slice(cursor, entity.char_start).join(""));
      parts.push(entityButton(entity, i, chars.slice(entity.char_start, entity.char_end).join("")));
      cursor = entity.char_end;
    }
    parts.push(chars.slice(cursor).join(""));
    els.highlighted.replaceChildren(...parts);
    els.list.replaceChildren(...result.entities.map(listItem));
    els.noEntities.hidden = result.entities.length > 0;
    els.chooseHint.hidden = result.entities.length === 0;
    els.imageStatus.textContent = isListed()
      ? `Images: ${result.image_statuses.map((s, i) => `${i + 1}. ${s}`).join("; ")}.`
      : `Image: ${result.image_status}.`;
    renderLegend();
    els.results.hidden = false;
    els.explain.hidden = true;
  }

  function onEntityClick(event) {
    const target = event.target.closest("[data-index]");
    if (target) select(Number(target.dataset.index));
  }

  function select(index) {
    for (const node of document.querySelectorAll("#results [data-index]")) {
      node.setAttribute("aria-pressed", String(Number(node.dataset.index) === index));
    }
    const { result } = state;
    const entity = result.entities[index];
    const name = `“${entity.text}” (${entity.type})`;
    // The image the entity is grounded in, and the crop of it that the model saw.
    const listed = isListed();
    const at = listed ? entity.image_index : 0;
    const found = Number.isInteger(at);
    const image = found ? state.images[at] || null : null;
    const cropBox = listed ? (found && result.crop_boxes ? result.crop_boxes[at] : null)
      : result.crop_box;
    els.explain.hidden = false;
    if (!entity.attention || !image) {
      els.canvas.hidden = true;
      els.canvas.removeAttribute("data-entity");
      let why = `the model did not use the image (${result.image_status})`;
      if (listed) {
        why = found ? `the model did not use image ${at + 1} (${result.image_statuses[at]})`
          : `the model used none of the images (${result.image_statuses.join(", ")})`;
      }
      if (!state.imagesSent) why = "no image was sent with this post";
      else if (entity.attention && found && !image) {
        why = listed ? `this browser cannot display image ${at + 1}`
          : "this browser cannot display the image";
      }
      els.caption.textContent = `No heatmap for ${name}: ${why}.`;
      els.explain.scrollIntoView({ block: "nearest" });
      return;
    }
    const peak = drawHeatmap(els.canvas, image, entity.attention, cropBox);
    const rows = entity.attention.length;
    const cols = entity.attention[0].length;
    const where = `strongest in row ${peak.row + 1}, column ${peak.col + 1}`;
    const of = listed ? `regions of image ${at + 1} of ${result.image_statuses.length}`
      : "image regions";
    let global = "";
    if (entity.global_attention !== null && entity.global_attention !== undefined) {
      const whole = Math.round(100 * entity.global_attention);
      global = listed
        ? ` ${whole}% of its attention went to the post's images as a whole.`
        : ` ${whole}% of its attention went to the image as a whole, ` +
          `${100 - whole}% to the ${rows}×${cols} regions drawn here.`;
    }
    let grounded = "";
    if (entity.box_score !== null && entity.box_score !== undefined) {
      const chance = Math.round(100 * entity.box_score);
      grounded = entity.box
        ? ` Its box, outlined in cyan, is where the model places it in the image (${chance}% sure it is there).`
        : ` The model says it is not in the image (${chance}% that it is).`;
    }
    if (entity.box) drawBox(els.canvas, image, entity.box);
    els.caption.textContent =
      `Attention of ${name} over the ${rows}×${cols} ${of}, ${where}.${global}${grounded}`;
    els.canvas.setAttribute("aria-label", `Image with the attention heatmap of ${name}, ${where}`);
    els.canvas.dataset.entity = String(index);
    els.canvas.hidden = false;
    els.explain.scrollIntoView({ block: "nearest" });
  }

  // Draws the image, then the [h][w] grid on top: one pixel per region in a small canvas,
  // scaled up by the browser with smoothing (bilinear), red-to-yellow and more opaque where
  // attention is stronger, normalised to the strongest region (as `smner predict --heatmaps`).
  // The grid covers only the crop the model saw (cropBox, image pixels); the rest is dimmed.
  function drawHeatmap(canvas, image, attention, cropBox) {
    const side = Math.max(image.naturalWidth, image.naturalHeight);
    const scale = Math.min(MAX_CANVAS_SIDE / side, Math.max(1, MIN_CANVAS_SIDE / side));
    const width = Math.max(1, Math.round(image.naturalWidth * scale));
    const height = Math.max(1, Math.round(image.naturalHeight * scale));
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, width, height);

    const rows = attention.length;
    const cols = attention[0].length;
    const peak = { value: 0, row: 0, col: 0 };
    attention.forEach((row, r) => row.forEach((value, c) => {
      if (value > peak.value) Object.assign(peak, { value, row: r, col: c });
    }));
    const grid = document.createElement("canvas");
    grid.width = cols;
    grid.height = rows;
    const gridContext = grid.getContext("2d");
    const cells = gridContext.createImageData(cols, rows);
    attention.forEach((row, r) => row.forEach((value, c) => {
      const t = peak.value > 0 ? Math.max(0, value) / peak.value : 0;
      cells.data.set([255, Math.round(255 * t), 0, Math.round(255 * HEAT_OPACITY * t)],
        4 * (r * cols + c));
    }));
    gridContext.putImageData(cells, 0, 0);
    const [x0, y0, x1, y1] = (cropBox || [0, 0, image.naturalWidth, image.naturalHeight])
      .map((value) => value * scale);
    context.fillStyle = "rgba(0, 0, 0, 0.55)";
    context.fillRect(0, 0, width, y0);
    context.fillRect(0, y1, width, height - y1);
    context.fillRect(0, y0, x0, y1 - y0);
    context.fillRect(x1, y0, width - x1, y1 - y0);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(grid, x0, y0, x1 - x0, y1 - y0);
    return peak;
  }

  // Outlines an entity's box ([x0, y0, x1, y1] in image pixels) over the drawn canvas.
  function drawBox(canvas, image, box) {
    const scale = canvas.width / image.naturalWidth;
    const [x0, y0, x1, y1] = box.map((value) => Math.round(value * scale));  // crisp lines
    const context = canvas.getContext("2d");
    const line = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 100));
    context.strokeStyle = BOX_COLOUR;
    context.lineWidth = line;
    context.strokeRect(x0 + line / 2, y0 + line / 2, x1 - x0 - line, y1 - y0 - line);
  }

  els.form.addEventListener("submit", onSubmit);
  els.file.addEventListener("change", onFileChange);
  els.preview.addEventListener("load", onPreviewLoad);
  els.preview.addEventListener("error", onPreviewError);
  els.text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      els.form.requestSubmit();
    }
  });
  els.highlighted.addEventListener("click", onEntityClick);
  els.list.addEventListener("click", onEntityClick);
  loadModelInfo();
})();
