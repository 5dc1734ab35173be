// The stores alone: T threads each write their rows of an M x N int32 output (row stride N * 4), 16 columns a
// row at a time panel by panel as the avx2 tiles do (two 32-byte stores), the same array every repetition.
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static int64_t M, N; static int32_t *out; static int T;
static pthread_barrier_t bar;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static double times[2000];
__attribute__((target("avx2"))) static void fill(int id){
  int64_t r0=M*id/T, r1=M*(id+1)/T; __m256i v=_mm256_set1_epi32(id+1);
  for(int64_t p=0;p<N;p+=16) for(int64_t i=r0;i<r1;i++){
    _mm256_storeu_si256((__m256i*)(out+i*N+p),v);
    if(p+8<N)_mm256_storeu_si256((__m256i*)(out+i*N+p+8),v);}
}
static int reps;
static void*run(void*a){int id=(int)(intptr_t)a; cpu_set_t s; CPU_ZERO(&s); CPU_SET(id,&s); pthread_setaffinity_np(pthread_self(),sizeof s,&s);
  for(int r=0;r<reps;r++){pthread_barrier_wait(&bar); double t=now(); fill(id); pthread_barrier_wait(&bar); if(id==0)times[r]=now()-t;} return 0;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){M=atol(v[1]);N=atol(v[2]);T=atoi(v[3]);reps=atoi(v[4]);
  out=aligned_alloc(64,((M*N*4+63)/64)*64); pthread_barrier_init(&bar,0,T); pthread_t th[8];
  for(int i=1;i<T;i++)pthread_create(&th[i],0,run,(void*)(intptr_t)i); run(0); for(int i=1;i<T;i++)pthread_join(th[i],0);
  qsort(times,reps,sizeof(double),cmp); printf("%ldx%ld int32 (%.2f MB) %d threads: median %.1f us, best %.1f us, %.1f GB/s at median\n",M,N,M*N*4/1e6,T,times[reps/2]*1e6,times[0]*1e6,M*N*4/times[reps/2]/1e9);}
