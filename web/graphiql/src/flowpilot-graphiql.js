/*
 * FlowPilot GraphiQL: mounts GraphiQL (UMD build, React 18 globals) on the
 * page served by FlowPilot at GET /graphql.
 *
 * - Queries and mutations are POSTed to /graphql on the same origin with the
 *   headers from GraphiQL's header editor.
 * - Subscriptions go over WebSocket to ws(s)://<same host>/graphql/ws with the
 *   graphql-transport-ws protocol (graphql-ws). The server reads the access
 *   token from the connection_init payload {"authorization": "Bearer …"}, so
 *   it is taken from the header editor's Authorization header. One WebSocket
 *   client is kept for the current authorization value; when the value
 *   changes, the previous client is disposed.
 * - Headers persist across GraphiQL tabs and page reloads: GraphiQL stores
 *   each tab's headers (shouldPersistHeaders), and the last edited headers
 *   are kept in localStorage and handed to GraphiQL as defaultHeaders, so a
 *   new tab starts with them.
 *
 * Plain browser JavaScript, no inline code: the page runs under
 * Content-Security-Policy: default-src 'self'.
 */
(function () {
  'use strict';

  var HTTP_PATH = '/graphql';
  var WS_PATH = '/graphql/ws';
  // In GraphiQL's storage namespace, so its "Clear storage" setting clears it.
  var HEADERS_STORAGE_KEY = 'graphiql:flowpilot:lastHeaders';
  var GRAPHIQL_PERSIST_KEY = 'graphiql:shouldPersistHeaders'; // GraphiQL's own
  var DEFAULT_HEADERS = '{}';
  var DEFAULT_QUERY = [
    '# Welcome to FlowPilot GraphiQL.',
    '#',
    '# 1. Register or sign in (mutation register / login) to get an access token.',
    '# 2. Put it in the Headers tab below: { "Authorization": "Bearer <accessToken>" }',
    '#    Headers are kept across tabs and reloads in this browser.',
    '# 3. Ask who you are:',
    '',
    'query Me {',
    '  viewer {',
    '    id',
    '    email',
    '    displayName',
    '  }',
    '}',
    ''
  ].join('\n');

  var React = window.React;
  var ReactDOM = window.ReactDOM;
  var GraphiQL = window.GraphiQL;
  var graphqlWs = window.graphqlWs;

  var container = document.getElementById('graphiql');

  function fail(message) {
    // Shown in the page when a bundled script is missing (e.g. blocked).
    container.textContent = 'FlowPilot GraphiQL could not start: ' + message;
    throw new Error(message);
  }

  if (!React || !ReactDOM || !ReactDOM.createRoot) fail('React 18 did not load.');
  if (!GraphiQL) fail('GraphiQL did not load.');
  if (!graphqlWs || !graphqlWs.createClient) fail('graphql-ws did not load.');

  // Full-height layout, set through the CSSOM (allowed by style-src 'self',
  // unlike inline style attributes or <style> elements).
  document.documentElement.style.height = '100%';
  document.body.style.height = '100%';
  document.body.style.margin = '0';
  document.body.style.overflow = 'hidden';
  container.style.height = '100vh';

  // ------------------------------------------------------------ CSP: <style>
  //
  // GraphiQL's dialogs (settings, short keys) lock the page scroll with a
  // library (react-remove-scroll) that appends a <style> element to <head>.
  // Under style-src 'self' any <style> element is refused (a CSP violation
  // report, rules not applied). Such elements are kept out of the document
  // instead and their rules applied as a constructed stylesheet, which CSP
  // allows; removing the element removes the rules.
  (function keepStyleElementsOutOfHead() {
    var head = window.HTMLHeadElement && window.HTMLHeadElement.prototype;
    if (!head || !('adoptedStyleSheets' in document) || typeof window.CSSStyleSheet !== 'function') return;
    var appendChild = window.Node.prototype.appendChild;
    var removeChild = window.Node.prototype.removeChild;
    var holder = document.createElement('div'); // never attached to the document
    var sheets = [];

    holder.removeChild = function (node) {
      var kept = [];
      var remaining = [];
      sheets.forEach(function (entry) {
        (entry.element === node ? kept : remaining).push(entry);
      });
      sheets = remaining;
      if (kept.length) {
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter(function (s) {
          return s !== kept[0].sheet;
        });
      }
      return removeChild.call(this, node);
    };

    head.appendChild = function (node) {
      if (!(node instanceof window.HTMLStyleElement) || node.nonce) {
        return appendChild.call(this, node);
      }
      try {
        var sheet = new window.CSSStyleSheet();
        sheet.replaceSync(node.textContent || '');
        document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
        sheets.push({ element: node, sheet: sheet });
      } catch (e) {
        /* the rules are dropped, as CSP would have done */
      }
      return appendChild.call(holder, node);
    };
  })();

  // ---------------------------------------------------------------- storage

  function storageGet(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (e) {
      return null; // storage disabled: headers just do not persist
    }
  }

  function storageSet(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch (e) {
      /* storage disabled or full */
    }
  }

  function storageRemove(key) {
    try {
      window.localStorage.removeItem(key);
    } catch (e) {
      /* storage disabled */
    }
  }

  // ---------------------------------------------------------------- helpers

  function authorizationOf(headers) {
    if (!headers || typeof headers !== 'object') return null;
    var keys = Object.keys(headers);
    for (var i = 0; i < keys.length; i++) {
      if (keys[i].toLowerCase() === 'authorization') {
        var value = headers[keys[i]];
        if (value === null || value === undefined) return null;
        value = String(value).trim();
        return value === '' ? null : value;
      }
    }
    return null;
  }

  // The operations of a GraphQL document: [{type, name}], found by a small
  // scan at brace depth 0 that skips comments, strings and parentheses
  // (variable defaults and directive arguments may hold braces).
  function operationsOf(text) {
    var ops = [];
    var depth = 0;
    var parens = 0;
    var i = 0;
    var n = text.length;
    while (i < n) {
      var c = text.charAt(i);
      if (c === '#') {
        while (i < n && text.charAt(i) !== '\n' && text.charAt(i) !== '\r') i++;
      } else if (c === '"') {
        if (text.substr(i, 3) === '"""') {
          var close = text.indexOf('"""', i + 3);
          while (close > 0 && text.charAt(close - 1) === '\\') close = text.indexOf('"""', close + 3);
          i = close < 0 ? n : close + 3;
        } else {
          i++;
          while (i < n && text.charAt(i) !== '"' && text.charAt(i) !== '\n') {
            i += text.charAt(i) === '\\' ? 2 : 1;
          }
          i++;
        }
      } else if (c === '(' || c === ')') {
        parens = Math.max(0, parens + (c === '(' ? 1 : -1));
        i++;
      } else if (parens > 0) {
        i++;
      } else if (c === '{') {
        if (depth === 0 && (ops.length === 0 || ops[ops.length - 1].open)) {
          ops.push({ type: 'query', name: null }); // shorthand query
        }
        if (depth === 0 && ops.length) ops[ops.length - 1].open = true;
        depth++;
        i++;
      } else if (c === '}') {
        depth = Math.max(0, depth - 1);
        i++;
      } else if (depth === 0 && /[_A-Za-z]/.test(c)) {
        var word = /^[_A-Za-z][_0-9A-Za-z]*/.exec(text.slice(i))[0];
        i += word.length;
        if (word === 'query' || word === 'mutation' || word === 'subscription') {
          var name = /^\s*([_A-Za-z][_0-9A-Za-z]*)/.exec(text.slice(i));
          ops.push({ type: word, name: name ? name[1] : null, open: false });
        } else if (word === 'fragment') {
          ops.push({ type: 'fragment', name: null, open: false });
        }
      } else {
        i++;
      }
    }
    return ops.filter(function (op) {
      return op.type !== 'fragment';
    });
  }

  // True when the operation that will run is a subscription. GraphiQL hands
  // over the parsed document, but it is refreshed after a short debounce, so
  // it is used only when it is the document being sent.
  function isSubscription(params, opts) {
    var query = String(params.query || '');
    var wanted = params.operationName || null;
    var doc = opts && opts.documentAST;
    if (doc && doc.definitions && doc.loc && doc.loc.source && doc.loc.source.body === query) {
      var defs = doc.definitions.filter(function (d) {
        return d.kind === 'OperationDefinition';
      });
      for (var i = 0; i < defs.length; i++) {
        var name = defs[i].name ? defs[i].name.value : null;
        if (wanted ? name === wanted : defs.length === 1) return defs[i].operation === 'subscription';
      }
    }
    var ops = operationsOf(query);
    for (var j = 0; j < ops.length; j++) {
      if (wanted ? ops[j].name === wanted : ops.length === 1) return ops[j].type === 'subscription';
    }
    return false;
  }

  function wsUrl() {
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + window.location.host + WS_PATH;
  }

  // ------------------------------------------------------------- WebSocket

  var ws = { authorization: undefined, client: null };

  function wsClientFor(authorization) {
    if (ws.client && ws.authorization === authorization) return ws.client;
    if (ws.client) {
      // A different token: subscriptions made with the previous one end.
      ws.client.dispose();
    }
    ws.authorization = authorization;
    ws.client = graphqlWs.createClient({
      url: wsUrl(),
      lazy: true,
      retryAttempts: 3,
      connectionParams: function () {
        return authorization ? { authorization: authorization } : {};
      }
    });
    return ws.client;
  }

  function subscribe(params, authorization) {
    // An Observable as GraphiQL expects it: subscribe({next, error, complete})
    // returning {unsubscribe}.
    return {
      subscribe: function (observer) {
        var client = wsClientFor(authorization);
        var dispose = client.subscribe(
          {
            query: params.query,
            variables: params.variables || undefined,
            operationName: params.operationName || undefined
          },
          {
            next: function (value) {
              observer.next(value);
            },
            error: function (err) {
              observer.error(describeWsError(err));
            },
            complete: function () {
              observer.complete();
            }
          }
        );
        return { unsubscribe: dispose };
      }
    };
  }

  function describeWsError(err) {
    if (Array.isArray(err)) return { errors: err }; // GraphQL errors
    if (err && typeof err.code === 'number' && 'reason' in err) {
      // CloseEvent
      return new Error(
        'WebSocket closed (' + err.code + (err.reason ? ': ' + err.reason : '') + ')'
      );
    }
    if (err instanceof Error) return err;
    return new Error('WebSocket connection to ' + wsUrl() + ' failed');
  }

  // ------------------------------------------------------------------ HTTP

  function post(params, headers) {
    var requestHeaders = {
      Accept: 'application/json',
      'Content-Type': 'application/json'
    };
    if (headers && typeof headers === 'object') {
      Object.keys(headers).forEach(function (key) {
        var value = headers[key];
        if (value !== null && value !== undefined) requestHeaders[key] = String(value);
      });
    }
    return window
      .fetch(HTTP_PATH, {
        method: 'POST',
        headers: requestHeaders,
        credentials: 'same-origin',
        body: JSON.stringify({
          query: params.query,
          variables: params.variables || undefined,
          operationName: params.operationName || undefined
        })
      })
      .then(function (response) {
        return response.text().then(function (text) {
          try {
            return JSON.parse(text);
          } catch (e) {
            return {
              errors: [
                {
                  message:
                    'HTTP ' + response.status + ' ' + response.statusText + ': ' +
                    (text.length > 500 ? text.slice(0, 500) + '…' : text)
                }
              ]
            };
          }
        });
      });
  }

  function fetcher(params, opts) {
    var headers = (opts && opts.headers) || {};
    if (isSubscription(params, opts)) {
      return subscribe(params, authorizationOf(headers));
    }
    return post(params, headers);
  }

  // ---------------------------------------------------------------- render

  var root = ReactDOM.createRoot(container);
  var defaultHeaders = storageGet(HEADERS_STORAGE_KEY) || DEFAULT_HEADERS;

  function render() {
    root.render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        defaultQuery: DEFAULT_QUERY,
        defaultHeaders: defaultHeaders,
        shouldPersistHeaders: true,
        isHeadersEditorEnabled: true,
        defaultEditorToolsVisibility: 'headers',
        onEditHeaders: onEditHeaders
      })
    );
  }

  function setDefaultHeaders(value) {
    if (typeof value !== 'string' || value === defaultHeaders) return;
    defaultHeaders = value;
    render();
  }

  // The last edited headers become the headers of every new GraphiQL tab,
  // in this browser tab and (through the storage event) in the others. They
  // are not stored while "Persist headers" is switched off in GraphiQL's
  // settings.
  function onEditHeaders(value) {
    if (storageGet(GRAPHIQL_PERSIST_KEY) === 'false') {
      storageRemove(HEADERS_STORAGE_KEY);
    } else {
      storageSet(HEADERS_STORAGE_KEY, value);
    }
    setDefaultHeaders(value);
  }

  window.addEventListener('storage', function (event) {
    if (event.key === HEADERS_STORAGE_KEY && event.newValue !== null) {
      setDefaultHeaders(event.newValue);
    }
  });

  render();
})();
