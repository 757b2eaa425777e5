// Small DOM helpers shared by the pack's frontend extensions.

/** Add a <style> once per id (extensions may be re-imported by the frontend's hot paths). */
export function addStyle(id, css) {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.append(style);
}

/** A new element with a class name, properties and children. */
export function el(tag, className = "", props = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  Object.assign(node, props);
  node.append(...children);
  return node;
}

/** Run `fn` when the node leaves the graph (keeps whatever onRemoved already did). */
export function onNodeRemoved(node, fn) {
  const previous = node.onRemoved;
  node.onRemoved = function onRemoved(...args) {
    fn();
    return previous?.apply(this, args);
  };
}

/** Call `fn` after every change the user makes to a widget, keeping the widget's own callback. */
export function onWidgetChange(widget, fn) {
  const previous = widget.callback;
  widget.callback = function callback(...args) {
    const result = previous?.apply(this, args);
    fn(widget.value);
    return result;
  };
}
