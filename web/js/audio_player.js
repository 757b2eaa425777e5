// Audio players on the pack's audio nodes (Load, Save, Preview).
//
// The frontend gives its `AUDIO_UI` player (an <audio> element that follows the node's output or the
// chosen input file) only to ComfyUI's own audio nodes. Declaring the same frontend-only input on ours
// brings that player to them, with no code of our own to keep in step with the frontend.
//
// Order matters on Load Audio: the frontend's upload button (added for combos marked `audio_upload`)
// looks up the `audioUI` widget when it is created, so `audioUI` must come before `upload`.

import { app } from "../../../scripts/app.js";

const PLAYER_NODES = ["AceStepLoadAudio", "AceStepSaveAudio", "AceStepPreviewAudio"];

/** The node definition's required inputs with `audioUI` added before the frontend's `upload` button. */
export function withAudioPlayer(required) {
  if ("audioUI" in required) return required;
  const { upload, ...rest } = required;
  const ordered = { ...rest, audioUI: ["AUDIO_UI", {}] };
  if (upload !== undefined) ordered.upload = upload;
  return ordered;
}

app.registerExtension({
  name: "acestep.audioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PLAYER_NODES.includes(nodeData?.name)) return;
    nodeData.input ??= {};
    nodeData.input.required = withAudioPlayer(nodeData.input.required ?? {});
  },
});
