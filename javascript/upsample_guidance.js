// Upsample guidance: hover hints for the script's controls (txt2img and img2img).
// Two ways, so that both A1111 (gradio 3) and Forge (gradio 4) show them: entries in the WebUI's global
// `titles` table (looked up by a control's label text), and a `title` attribute set on our own elements.
(function () {
    const upsampleGuidanceHints = {
        "Upsample guidance": "Sample above the model's trained size without duplicated subjects: on each guided step the model also sees a downsampled copy of the image, and the low-frequency part of its prediction is taken from there. One extra model call at a fraction of the pixels per guided step.",
        "Guidance scale": "Weight of the low-resolution correction (theta). 0 = off, 1 = the low frequencies come from the low-resolution prediction; the paper uses about 1 to 1.2.",
        "Guided fraction (eta)": "Guidance runs on this fraction of the noise range, from the noisiest end (0.6 = the first 60%). Later guidance blurs latent models' details.",
        "Base resolution (Auto or 64-8192 px)": "The size the model was trained at. Auto takes it from the model family (Settings > Upsample guidance). Images at or below it are not guided.",
        "Resampler": "How the image is shrunk and enlarged: box (average pooling, whole-number factors), spectral (cosine transform, any size), auto (box when a whole-number factor fits).",
        "Guide the hires. fix second pass": "Also guide the second pass of Hires. fix (the first pass is at the base size and is never changed).",
    };
    const upsampleGuidanceIds = {
        "enable": "Upsample guidance",
        "scale": "Guidance scale",
        "eta": "Guided fraction (eta)",
        "base": "Base resolution (Auto or 64-8192 px)",
        "resampler": "Resampler",
        "hires_pass": "Guide the hires. fix second pass",
        "readout": null,
    };

    function upsampleGuidanceApplyTitles() {
        const app = typeof gradioApp === "function" ? gradioApp() : document;
        for (const tab of ["txt2img", "img2img"]) {
            for (const [id, label] of Object.entries(upsampleGuidanceIds)) {
                if (!label) continue;
                const el = app.querySelector(`#script_${tab}_upsample_guidance_${id}`);
                if (el && !el.title) el.title = upsampleGuidanceHints[label];
            }
        }
    }

    if (typeof titles === "object" && titles !== null) {
        Object.assign(titles, upsampleGuidanceHints);
    }
    if (typeof onUiLoaded === "function") {
        onUiLoaded(upsampleGuidanceApplyTitles);
    }
})();
