// Apollo Gateway (IntrospectAndCompose) over the same backends as strangler's gateway.
// Usage: PORT=4000 SUBGRAPHS='[{"name":"monolith","url":"http://127.0.0.1:8001/graphql"},...]' node gateway.mjs
//
// Apollo has no notion of "the gateway decides who owns Title.rating": in Apollo that
// is written in the subgraphs' SDL. The data source below rewrites the SDL it fetches
// so that every field a service can take over is the service's (@override from the
// monolith), as strangler's gateway serves it with those fields `extracted`: the
// monolith's value types (Rating, Credit, Image, ...) become @shareable, and each
// service's `field: T @shareable` on an entity becomes `field: T @override(from: "monolith")`.
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from '@apollo/gateway';

const subgraphs = JSON.parse(process.env.SUBGRAPHS);
const port = Number(process.env.PORT || 4000);

function patch(name, sdl) {
  if (name === 'monolith') {
    return sdl.replace('import: ["@key"]', 'import: ["@key", "@shareable"]')
      .replace(/^type (?!Query\b|Mutation\b)(\w+) \{/gm, 'type $1 @shareable {');
  }
  return sdl.replace(/"@external"\]/, '"@external", "@override"]')
    .replace(/^(\s+\w+(?:\([^)]*\))?: [^\n@]+?) @shareable$/gm, '$1 @override(from: "monolith")');
}

class PatchedSource extends RemoteGraphQLDataSource {
  async process(options) {
    const response = await super.process(options);
    const sdl = response?.data?._service?.sdl;
    if (typeof sdl === 'string') {
      response.data._service.sdl = patch(this.name, sdl);
    }
    return response;
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: new IntrospectAndCompose({ subgraphs }),
  buildService: ({ name, url }) => {
    const s = new PatchedSource({ url });
    s.name = name;
    return s;
  },
});
const server = new ApolloServer({ gateway, csrfPrevention: false, introspection: true });
const { url } = await startStandaloneServer(server, { listen: { port, host: '127.0.0.1' } });
console.log(`ready ${url}`);
