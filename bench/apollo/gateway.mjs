// Apollo Gateway (IntrospectAndCompose) over the same backends as strangler's gateway.
// Usage: PORT=4000 SUBGRAPHS='[{"name":"monolith","url":"http://127.0.0.1:8001/graphql"},...]' node gateway.mjs
//
// The monolith's SDL does not mark Rating @shareable and Apollo has no notion of
// "the gateway decides who owns Title.rating": in Apollo that is written in the SDL
// with @override. The data source below adds exactly that to the SDL it fetches,
// so both gateways send Title.rating to the ratings service.
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from '@apollo/gateway';

const subgraphs = JSON.parse(process.env.SUBGRAPHS);
const port = Number(process.env.PORT || 4000);

function patch(name, sdl) {
  if (name === 'monolith') {
    return sdl.replace('import: ["@key"]', 'import: ["@key", "@shareable"]')
      .replace('type Rating {', 'type Rating @shareable {');
  }
  if (name === 'ratings') {
    return sdl.replace('"@external"]', '"@external", "@override"]')
      .replace('rating: Rating @shareable', 'rating: Rating @override(from: "monolith")');
  }
  return sdl;
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
